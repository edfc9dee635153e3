// The outbox in a directory on Node.js: the core's storage contract kept in files, in the
// format and with the recovery rules of the core's `file_outbox` (the WASI component keeps its
// outbox the same way). Which files to read, what opening cuts and which file operations each
// request takes all come from the wasm `FileOutbox`; this module only reads and performs them
// with `node:fs`, each durably where the operation says so: `fdatasync` after a synced write,
// a replacement written under a temporary name, synced and renamed over the old file, and the
// directory synced after a file is created, renamed or deleted.
//
// Requests are performed one after the other in the order the core emitted them (`FileOutbox`
// takes each from the core itself), and each is answered on its own: a failed one does not undo
// those before it. Files being written stay open between requests.

import { mkdir, open, readFile, readdir, rename, rmdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { FileOutbox } from "./vdev_node_core.js";
import { VdevError } from "./errors.js";
import { describe } from "./io.js";
import { lockDirectory } from "./lock.js";

/**
 * Deletes what a device stored in `directory` (the outbox's files, the saved state with its
 * identity and tokens), and the directory once nothing else is in it: files the app keeps
 * there stay.
 * @param {string} directory
 */
export async function forgetDirectory(directory) {
  try {
    for (const name of FileOutbox.filesToRead(await readdir(directory))) await unlink(join(directory, name));
    await rmdir(directory).catch(() => {});
  } catch (error) {
    throw new VdevError("storageFailed", `cannot delete the outbox directory '${directory}': ${describe(error)}`);
  }
}

/** @typedef {{ op: string, file: string, offset?: number, len?: number, bytes?: Uint8Array, sync?: boolean }} FileOp */

/**
 * Opens (creating it when missing) and locks the outbox directory. Resolves to `{ store,
 * contents, recoveries }`: `contents` is what the core is made from, `recoveries` what opening
 * cut (for `Core.storeRecovered`).
 * @param {string} directory
 */
export async function openDirStore(directory) {
  const failed = (/** @type {unknown} */ error) =>
    new VdevError("storageUnavailable", `cannot open the outbox directory ${directory}: ${describe(error)}`);
  try {
    await mkdir(directory, { recursive: true });
  } catch (error) {
    throw failed(error);
  }
  let release;
  try {
    release = await lockDirectory(directory);
  } catch (error) {
    throw error instanceof VdevError ? error : failed(error);
  }
  try {
    const outbox = new FileOutbox();
    for (const name of FileOutbox.filesToRead(await readdir(directory))) {
      outbox.read(name, await readFile(join(directory, name)));
    }
    const { ops, recoveries } = outbox.open();
    const store = new DirStore(directory, outbox, release);
    for (const op of ops) await store.perform(op);
    // Defined once opened.
    const contents = /** @type {NonNullable<ReturnType<FileOutbox["contents"]>>} */ (outbox.contents());
    return { store, contents, recoveries };
  } catch (error) {
    release();
    throw error instanceof VdevError ? error : failed(error);
  }
}

class DirStore {
  /**
   * @param {string} directory
   * @param {FileOutbox} outbox
   * @param {() => void} release
   */
  constructor(directory, outbox, release) {
    this.directory = directory;
    this.outbox = outbox;
    this.release = release;
    /** @type {Map<string, import("node:fs/promises").FileHandle>} */
    this.writing = new Map();
    /** @type {any} the wasm `Core` whose requests this store performs */
    this.core = undefined;
  }

  /** @param {any} core */
  attach(core) {
    this.core = core;
  }

  /**
   * Performs the core's store requests in order, each with its own answer (a failed one too:
   * the core decides what follows): as many as the driver hands over (those it polls meanwhile
   * are the next batch's, so answers keep coming under a steady stream). The driver's copies
   * are not needed: `FileOutbox` takes them from the core, with appends that follow each other
   * joined into one.
   * @param {unknown[]} requests
   */
  async execute(requests) {
    const answers = [];
    for (let remaining = requests.length; remaining > 0; ) {
      const job = this.outbox.plan(this.core, remaining);
      if (!job) break;
      remaining -= job.taken;
      const { ops } = job;
      /** @type {Uint8Array[]} */
      const reads = [];
      let failedAt;
      let quotaExceeded = false;
      let message = "";
      for (let at = 0; at < ops.length; at++) {
        try {
          const read = await this.perform(ops[at]);
          if (read) reads.push(read);
        } catch (error) {
          failedAt = at;
          const code = /** @type {NodeJS.ErrnoException} */ (error).code;
          quotaExceeded = code === "ENOSPC" || code === "EDQUOT";
          message = `${ops[at].op} ${join(this.directory, ops[at].file)}: ${describe(error)}`;
          break;
        }
      }
      // Best effort: what it cannot undo now, the core's format undoes at the next write.
      if (failedAt !== undefined) for (const op of job.onFailure) await this.perform(op).catch(() => {});
      if (this.outbox.finish(failedAt, quotaExceeded, message, reads)) {
        answers.push({ kind: /** @type {const} */ ("input"), feed: (/** @type {number} */ now) => this.core.fileAnswer(now, this.outbox) });
      }
    }
    return answers;
  }

  /**
   * One file operation, durably where it says so; the bytes of a `read`.
   * @param {FileOp} op
   * @returns {Promise<Uint8Array | undefined>}
   */
  async perform(op) {
    const path = join(this.directory, op.file);
    switch (op.op) {
      case "create": {
        await this.forget(op.file);
        this.writing.set(op.file, await open(path, "w"));
        await this.syncDirectory();
        return;
      }
      case "write": {
        const handle = await this.writable(op.file);
        const bytes = /** @type {Uint8Array} */ (op.bytes);
        for (let done = 0; done < bytes.length; ) {
          const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, /** @type {number} */ (op.offset) + done);
          done += bytesWritten;
        }
        if (op.sync) await handle.datasync();
        return;
      }
      case "truncate": {
        const handle = await this.writable(op.file);
        await handle.truncate(op.len);
        await handle.sync();
        return;
      }
      case "replace": {
        await this.forget(op.file);
        const temporary = `${path}.tmp`;
        const handle = await open(temporary, "w");
        try {
          await handle.writeFile(/** @type {Uint8Array} */ (op.bytes));
          await handle.sync();
        } finally {
          await handle.close();
        }
        await rename(temporary, path);
        await this.syncDirectory();
        return;
      }
      case "delete":
        await this.forget(op.file);
        // Already gone (an earlier delete whose directory sync failed): done.
        await unlink(path).catch((error) => {
          if (error.code !== "ENOENT") throw error;
        });
        await this.syncDirectory();
        return;
      case "read": {
        const handle = await open(path, "r");
        try {
          const bytes = new Uint8Array(/** @type {number} */ (op.len));
          for (let done = 0; done < bytes.length; ) {
            const { bytesRead } = await handle.read(bytes, done, bytes.length - done, /** @type {number} */ (op.offset) + done);
            if (bytesRead === 0) throw new Error(`${bytes.length - done} bytes missing at the end`);
            done += bytesRead;
          }
          return bytes;
        } finally {
          await handle.close();
        }
      }
      default:
        throw new Error(`unknown file operation ${op.op}`);
    }
  }

  /** @param {string} file */
  async writable(file) {
    let handle = this.writing.get(file);
    if (!handle) {
      handle = await open(join(this.directory, file), "r+");
      this.writing.set(file, handle);
    }
    return handle;
  }

  /** @param {string} file */
  async forget(file) {
    const handle = this.writing.get(file);
    this.writing.delete(file);
    await handle?.close();
  }

  /**
   * Makes the directory's entries (a new, renamed or deleted file) durable. Windows cannot open
   * a directory to sync it (its renames are durable once done); elsewhere a failure fails the
   * operation.
   */
  async syncDirectory() {
    if (process.platform === "win32") return;
    const handle = await open(this.directory, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  /** Closes the files and lets go of the directory (the driver has no request running). */
  close() {
    for (const handle of this.writing.values()) handle.close().catch(() => {});
    this.writing.clear();
    this.outbox.free();
    this.release();
  }
}
