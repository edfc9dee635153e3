// The browser's outbox store: the core's storage contract (its `append`, `remove`, `load` and
// `saveState` requests) kept in one IndexedDB database.
//
// Layout (database version 1):
// - object store `records`: key = sequence number, value = the record's bytes (Uint8Array);
// - object store `meta`: `origin` (the core makes it and writes it with a reservation),
//   `nextSeq` (the high-water mark, kept after records are removed), `reserved` (the core's
//   durable reservation of sequence numbers), `bytes` (total size of the stored records, so that
//   opening a large backlog needs no scan) and `state` (the core's blob);
//   `sent:<seq, 16 digits>` = the key of the forwarded request (`"<from> <n>"`, see tabs.js)
//   whose message was stored under `seq`, written in the same transaction as the record: a new
//   owner answers a request its predecessor stored but could not answer from there instead of
//   storing the message twice. Entries more than REMEMBERED_SENDS numbers below the newest go.
//   (In `meta`, so no new database version: a tab still running an older vdev-web keeps
//   opening the database.)
//
// `execute` runs a whole batch of requests in ONE readwrite transaction and resolves only once
// it has committed. A batch holding a request the core marks `durable` (appends,
// reservations, state saves: `StoreRequest::must_be_durable`) commits with `durability:
// "strict"`: `complete` then means on disk, not just handed to the OS (Chromium's default has
// been `relaxed` since version 121, and a power cut would roll such a batch back after the app
// was told its message is stored). Removals and loads alone keep the browser's default. Inside a transaction nothing but
// IndexedDB requests is awaited (it commits by itself as soon as it has no pending request);
// promise continuations run as microtasks of the request's event, while it is still active.

import { VdevError } from "./errors.js";
import { describe } from "./io.js";

/** @import { StoreRequest, StoredRecord } from "./vdev_web_core.js" */

/**
 * What `execute` answers: the core's `appended`, `loaded`, `reserved` and `stateSaved` inputs,
 * or (`input`, the Node.js host's directory store) an answer the store feeds the core itself.
 * @typedef {{ kind: "appended", first: number, last: number }
 *   | { kind: "loaded", records: StoredRecord[] }
 *   | { kind: "reserved", below: number }
 *   | { kind: "stateSaved", reportedRevision: number }
 *   | { kind: "input", feed(now: number): void }} Answer
 */

/** The store `openStore` makes, named for other modules (the class is not exported). @typedef {IdbStore} Store */

const RECORDS = "records";
const META = "meta";

/** Records read by a load's first chunk (see `load`). */
const FIRST_LOAD_CHUNK = 16;

/** How far below the newest forwarded send the store remembers others (see `sent:`). */
const REMEMBERED_SENDS = 10000;

/** The `meta` key of the forwarded send stored under `seq`: ordered as the numbers are. */
const sentKey = (/** @type {number} */ seq) => `sent:${String(seq).padStart(16, "0")}`;

/** The `sent:` keys of `meta` below `end` (all of them without one). */
const sentBelow = (/** @type {string} */ end = "sent;") => IDBKeyRange.bound("sent:", end, false, true);

/** Why a storage transaction failed; nothing of its batch was stored. */
export class StoreFailure extends Error {
  /** @param {any} [error] what IndexedDB threw or the transaction's `error` */
  constructor(error) {
    super(error ? describe(error) : "transaction aborted");
    // Read as "storage failed: <why>", as the core words a store error.
    this.name = "storage failed";
    this.quotaExceeded = error?.name === "QuotaExceededError";
  }
}

/**
 * A request's result, or its error.
 * @template T
 * @param {IDBRequest<T>} request
 * @returns {Promise<T>}
 */
const done = (request) =>
  new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });

/**
 * A stored count, high-water mark or size; 0 when absent or not a count.
 * @param {any} value whatever the database holds
 * @returns {number}
 */
const count = (value) => (Number.isFinite(value) && value >= 0 ? value : 0);

/** 32 hex digits from 16 random bytes: a tab's id. */
export const randomId = () =>
  Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");

function factory() {
  const indexedDB = globalThis.indexedDB;
  if (!indexedDB) throw new VdevError("storageUnavailable", "indexeddb is unavailable: this environment has no indexedDB");
  return indexedDB;
}

/**
 * Opens (creating on first use) the database `name`. Resolves to `{ store, contents }`,
 * `contents` being `{ origin, nextSeq, reserved, bytes, count, state }` (what the core is made
 * from) and `sent` (the forwarded sends stored, oldest first: request key -> sequence number).
 * @param {string} name
 */
export async function openStore(name) {
  const failed = (/** @type {unknown} */ error) =>
    new VdevError("storageUnavailable", `cannot open database '${name}': ${describe(error)}`);
  let request;
  try {
    request = factory().open(name, 1);
  } catch (error) {
    throw error.message?.startsWith("indexeddb") ? error : failed(error);
  }
  // Only version 1 exists: create whichever store is missing.
  request.onupgradeneeded = () => {
    const database = request.result;
    for (const store of [RECORDS, META]) {
      if (!database.objectStoreNames.contains(store)) database.createObjectStore(store);
    }
  };
  let database;
  try {
    database = await done(request);
  } catch (error) {
    throw failed(error);
  }
  // Let a later schema upgrade or a deletion of this database proceed instead of blocking on
  // this connection; the device then sees storage errors.
  database.onversionchange = () => database.close();
  const store = new IdbStore(name, database);
  try {
    return { store, contents: await store.readContents() };
  } catch (error) {
    database.close();
    throw failed(error);
  }
}

/**
 * Deletes the database `name` and everything in it.
 * @param {string} name
 */
export async function deleteStore(name) {
  try {
    await done(factory().deleteDatabase(name));
  } catch (error) {
    throw error.message?.startsWith("indexeddb")
      ? error
      : new VdevError("storageFailed", `cannot delete database '${name}': ${describe(error)}`);
  }
}

class IdbStore {
  /**
   * @param {string} name
   * @param {IDBDatabase} database
   */
  constructor(name, database) {
    this.name = name;
    this.database = database;
  }

  /** Closes the connection once running transactions have finished. */
  close() {
    this.database.close();
  }

  /**
   * Reads the meta entries and counts the records. The high-water mark is never below the
   * highest record's key: a meta entry that lost an update must not hand out a stored record's
   * number again. The origin is handed over as it is (empty when there is none): whether the
   * core can use it, and a new one when not, are the core's to decide.
   */
  readContents() {
    return this.transaction(async (records, meta) => {
      const [origin, nextSeq, reserved, bytes, state, stored, last, sentKeys, sentRequests] = await Promise.all([
        done(meta.get("origin")),
        done(meta.get("nextSeq")),
        done(meta.get("reserved")),
        done(meta.get("bytes")),
        done(meta.get("state")),
        done(records.count()),
        done(records.openKeyCursor(null, "prev")),
        done(meta.getAllKeys(sentBelow())),
        done(meta.getAll(sentBelow())),
      ]);
      const highest = last && Number.isInteger(last.key) ? /** @type {number} */ (last.key) : -1;
      const contents = {
        origin: typeof origin === "string" ? origin : "",
        nextSeq: Math.max(count(nextSeq), highest + 1),
        // Handed over as it is: a missing or unreadable reservation is the core's to judge.
        reserved: Number.isSafeInteger(reserved) && reserved >= 0 ? reserved : undefined,
        bytes: count(bytes),
        count: count(stored),
        // Something else than bytes reaches the core as empty, which it reports as unreadable.
        state: state === undefined || state instanceof Uint8Array ? state : new Uint8Array(0),
        /** @type {Map<string, number>} */
        sent: new Map(),
      };
      // Ascending, as IndexedDB returns keys.
      sentKeys.forEach((key, at) => {
        const seq = Number(String(key).slice("sent:".length));
        if (typeof sentRequests[at] === "string" && Number.isSafeInteger(seq)) contents.sent.set(sentRequests[at], seq);
      });
      return contents;
    });
  }

  /**
   * Performs `requests` in order in one transaction. Resolves to the answers (`appended` per
   * non-empty append, `loaded` per load) once the transaction committed; rejects with a
   * `StoreFailure`, and then nothing of the batch was stored. `sends` are the forwarded
   * requests whose messages this batch appends (request key -> sequence number): remembered
   * with them, all or nothing.
   * @param {StoreRequest[]} requests
   * @param {Map<string, number>} [sends]
   */
  execute(requests, sends) {
    const strict = requests.some((r) => r.durable);
    return this.transaction(async (records, meta) => {
      if (sends?.size) {
        let newest = 0;
        for (const [key, seq] of sends) {
          meta.put(key, sentKey(seq));
          newest = Math.max(newest, seq);
        }
        meta.delete(sentBelow(sentKey(Math.max(0, newest - REMEMBERED_SENDS))));
      }
      let [nextSeq, bytes, reserved] = (
        await Promise.all([done(meta.get("nextSeq")), done(meta.get("bytes")), done(meta.get("reserved"))])
      ).map(count);
      /** @type {Answer[]} */
      const answers = [];
      for (const request of requests) {
        switch (request.kind) {
          case "append": {
            for (const record of request.records) {
              records.put(record.data, record.seq);
              bytes += record.data.length;
              nextSeq = Math.max(nextSeq, record.seq + 1);
            }
            const all = request.records;
            if (all.length) answers.push({ kind: "appended", first: all[0].seq, last: all[all.length - 1].seq });
            break;
          }
          case "remove":
            remove(records, request.seqs);
            bytes = Math.max(0, bytes - request.bytes);
            break;
          case "load":
            answers.push({ kind: "loaded", records: await load(records, request) });
            break;
          case "saveState":
            meta.put(request.state, "state");
            answers.push({ kind: "stateSaved", reportedRevision: request.reportedRevision });
            break;
          case "reserve":
            // A new origin and the reservation are written together (one transaction).
            if (request.origin !== undefined) meta.put(request.origin, "origin");
            reserved = Math.max(reserved, request.below);
            meta.put(reserved, "reserved");
            answers.push({ kind: "reserved", below: request.below });
            break;
          default: {
            // tsc (js-check) fails here when the contract gains a request this store lacks.
            /** @type {never} */
            const unhandled = request;
            throw new StoreFailure(`unknown storage request ${JSON.stringify(unhandled)}`);
          }
        }
      }
      meta.put(nextSeq, "nextSeq");
      meta.put(bytes, "bytes");
      return answers;
    }, strict);
  }

  /**
   * Runs `steps(records, meta)` in a readwrite transaction; its result once committed (with
   * `strict`, once on disk).
   * @template T
   * @param {(records: IDBObjectStore, meta: IDBObjectStore) => Promise<T>} steps
   * @param {boolean} [strict]
   * @returns {Promise<T>}
   */
  async transaction(steps, strict = false) {
    let transaction;
    try {
      transaction = this.database.transaction([RECORDS, META], "readwrite", strict ? { durability: "strict" } : undefined);
    } catch (error) {
      throw new StoreFailure(error);
    }
    // Watched from the start, so that `complete` or `abort` cannot be missed.
    const settled = new Promise((resolve, reject) => {
      transaction.oncomplete = resolve;
      transaction.onabort = () => reject(new StoreFailure(transaction.error));
    });
    let result;
    try {
      result = await steps(transaction.objectStore(RECORDS), transaction.objectStore(META));
    } catch (error) {
      // A failed step aborts the transaction, so nothing of it stays.
      try {
        transaction.abort();
      } catch {
        // It already finished or aborted itself.
      }
      await settled.catch(() => {});
      throw error instanceof StoreFailure ? error : new StoreFailure(error);
    }
    await settled;
    return result;
  }
}

/**
 * Deletes `seqs` (ascending): one key-range delete per run of consecutive numbers.
 * @param {IDBObjectStore} records
 * @param {number[]} seqs
 */
function remove(records, seqs) {
  for (let start = 0; start < seqs.length; ) {
    let end = start;
    while (end + 1 < seqs.length && seqs[end + 1] === seqs[end] + 1) end++;
    records.delete(start === end ? seqs[start] : IDBKeyRange.bound(seqs[start], seqs[end]));
    start = end + 1;
  }
}

/**
 * Records with `seq >= from`, ascending, within the count and byte budget of the contract (the
 * record that crosses the byte budget is included). A value that is not bytes loads as empty,
 * which the core rejects as corrupt with a reason instead of stalling the queue; a key that is
 * not a sequence number (never written by this store) is skipped.
 *
 * Read in chunks (`getAllKeys` and `getAll`: two requests per chunk; a cursor took one per
 * record and was a tenth of a drain's time). The first chunk is small; the next ones are sized
 * from the records read so far to what the byte budget has left, so large records are not read
 * far past it.
 * @param {IDBObjectStore} records
 * @param {Extract<StoreRequest, { kind: "load" }>} request
 */
async function load(records, { from, maxCount, maxBytes }) {
  /** @type {StoredRecord[]} */
  const loaded = [];
  let total = 0;
  let read = 0;
  let range = IDBKeyRange.lowerBound(from);
  while (loaded.length < maxCount && total < maxBytes) {
    const left = maxCount - loaded.length;
    const chunk = read === 0 ? Math.min(FIRST_LOAD_CHUNK, left) : Math.max(1, Math.min(left, Math.ceil(((maxBytes - total) * read) / Math.max(1, total))));
    const [keys, values] = await Promise.all([done(records.getAllKeys(range, chunk)), done(records.getAll(range, chunk))]);
    for (let at = 0; at < keys.length && loaded.length < maxCount && total < maxBytes; at++) {
      // Any key IndexedDB holds; only integers pass the test below.
      const seq = /** @type {number} */ (keys[at]);
      if (Number.isInteger(seq) && seq >= 0) {
        const data = values[at] instanceof Uint8Array ? values[at] : new Uint8Array(0);
        total += data.length;
        loaded.push({ seq, data });
      }
    }
    read += keys.length;
    if (keys.length < chunk) break;
    range = IDBKeyRange.lowerBound(keys[keys.length - 1], true);
  }
  return loaded;
}
