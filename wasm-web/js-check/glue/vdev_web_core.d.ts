// The module `vdev_web_core.js` as the JavaScript host sees it: wasm-bindgen's glue of the
// binding `Core` (wasm-web/src/lib.rs), which scripts/build.sh generates next to a copy of js/
// at build time, so it never exists in js/. tsconfig.json's `rootDirs` lets `./vdev_web_core.js`
// in js/ resolve to this file.
//
// wasm-bindgen would type the plain objects the binding builds (options, outputs, stats) as
// `any`; they are written out here from lib.rs's doc comments, so the host's use of them is
// checked too. scripts/build.sh fails when this file's methods or parameters differ from
// those wasm-bindgen generates for lib.rs's `#[wasm_bindgen] impl Core` (scripts/check_glue_types.py).

import type { BrotliEncoder, ConnectionState, DeviceEvent, LogLevel, InitInput, InitOutput, SyncInitInput } from "../../js/vdev_web.js";

/** What `new Core(options)` reads; the last five are what the store holds. */
export interface CoreOptions {
    instance: string;
    provisioningToken: string;
    deviceId?: string;
    /** JSON text of an object of strings. */
    provisioningParameters?: string;
    /** "websocket" (the default and the browser's only one); "tcp" and "tls" on Node.js. */
    transport?: string;
    /** JSON text of an object of numbers: the tunables, by name (the core checks both). */
    tunables?: string;
    /** A Brotli encoder the app lends (the core checks it has `encode`). */
    brotli?: BrotliEncoder;
    now?: number;
    /** 32 bytes. */
    random: Uint8Array;
    origin?: string;
    nextSeq?: number;
    reserved?: number;
    bytes?: number;
    count?: number;
    savedState?: Uint8Array;
}

/** One stored record: its sequence number and bytes. */
export interface StoredRecord {
    seq: number;
    data: Uint8Array;
}

/**
 * The storage contract's requests (`store_request_json`, with their bytes taken); `durable`: it
 * must be on disk before its answer. In the Node.js build an append's `data` and a state's
 * `state` are undefined: its store reads them from the core (`FileOutbox.plan`).
 */
export type StoreRequest = { durable: boolean } & (
    | { kind: "append"; records: StoredRecord[] }
    | { kind: "load"; from: number; maxCount: number; maxBytes: number }
    | { kind: "remove"; seqs: number[]; bytes: number }
    | { kind: "saveState"; state: Uint8Array; reportedRevision: number }
    /** `origin`: a new origin id, to write with the reservation. */
    | { kind: "reserve"; below: number; origin?: string }
);

/** The sends `first..=last` succeed, or fail with the store's `error` when there is one. */
export interface SendSettlement {
    first: number;
    last: number;
    error?: { code: string; message: string };
}

/**
 * An output of the core, by `kind`: `pollOutput()`'s JSON text parsed, with the byte strings it
 * announces taken (`takeBytes()`) into their fields. The host polls until `timeout`.
 */
export type Output =
    | {
          kind: "http";
          id: number;
          method: string;
          url: string;
          headers: [string, string][];
          // A fresh copy out of wasm memory, so an ArrayBuffer (which `fetch` wants), never shared.
          body: Uint8Array<ArrayBuffer>;
          deadline: number;
          /** The most body bytes the core takes; a longer answer fails the request. */
          maxResponseBytes: number;
      }
    /** `url` for WebSocket; `host`, `port` and `tls` for TCP and TLS (the Node.js build). */
    | { kind: "connect"; conn: number; url?: string; host?: string; port?: number; tls?: boolean }
    | { kind: "transmit"; conn: number; bytes: Uint8Array<ArrayBuffer> }
    | { kind: "close"; conn: number }
    | StoreRequest
    /**
     * `event` is the core's event; its byte-string field comes apart (`true` in the text, the
     * bytes once taken). `settles`: the sends this event settles (`Event::send_settlement`),
     * failed with `error`.
     */
    | { kind: "event"; level: LogLevel; event: DeviceEvent; payload?: Uint8Array; settles?: SendSettlement }
    | { kind: "timeout"; deadline: number | null };

export interface CoreStats {
    pendingCount: number;
    pendingBytes: number;
    oldestEnqueuedAt: number | null;
    windowRecords: number;
    connectionState: ConnectionState;
    offline: boolean;
    /** A reported-properties update waits for the Platform's acknowledgement. */
    reportedPending: boolean;
}

/** vdev-core's device. Inputs take `now` (ms since the epoch) first; commands throw an `Error`. */
export class Core {
    constructor(options: CoreOptions);
    free(): void;
    /** Throws the core's `compressionUnavailable` error (as `send` would) when it cannot compress. */
    checkCompression(compression: number): void;
    httpResponse(now: number, id: number, status: number, retryAfter: string | null | undefined, body: Uint8Array): void;
    httpFailed(now: number, id: number, error: string): void;
    connected(now: number, conn: number): void;
    received(now: number, conn: number, bytes: Uint8Array): void;
    closed(now: number, conn: number, reason: string): void;
    appended(now: number, first: number, last: number): void;
    appendFailed(now: number, first: number, last: number, quotaExceeded: boolean, error: string): void;
    /** A `data` that is not a Uint8Array reads as empty (and is then rejected as corrupt). */
    loaded(now: number, records: StoredRecord[]): void;
    loadFailed(now: number, quotaExceeded: boolean, error: string): void;
    /** A `remove` output failed; the core asks again later. */
    removeFailed(now: number, seqs: number[], bytes: number, quotaExceeded: boolean, error: string): void;
    /** The `saveState` output that carried `reportedRevision` is durable. */
    stateSaved(now: number, reportedRevision: number): void;
    /** A `saveState` output failed; the core saves its state again later. */
    saveStateFailed(now: number, quotaExceeded: boolean, error: string): void;
    reserved(now: number, below: number): void;
    reserveFailed(now: number, below: number, quotaExceeded: boolean, error: string): void;
    networkAvailable(now: number): void;
    networkLost(now: number): void;
    appOffline(now: number, offline: boolean): void;
    timeout(now: number): void;
    /** `compression`: 0 none, 1 fastest, 2 smallest size. Returns the sequence number. */
    send(
        now: number,
        payload: Uint8Array,
        streamGroup: string | null | undefined,
        stream: string | null | undefined,
        siteId: string | null | undefined,
        compression: number,
        batchId: string | null | undefined,
        messageId: string | null | undefined,
        batchSliceId: string | null | undefined,
        chunkId: string | null | undefined,
    ): number;
    enqueueBatchCompletion(
        now: number,
        streamGroup: string | null | undefined,
        stream: string | null | undefined,
        siteId: string | null | undefined,
        batchId: string,
    ): number;
    enqueueMessageCompletion(
        now: number,
        streamGroup: string | null | undefined,
        stream: string | null | undefined,
        siteId: string | null | undefined,
        batchId: string,
        messageId: string,
    ): number;
    /** `patch` is JSON text; returns the update's revision (see `reportedPropertiesStored`). */
    updateReportedProperties(now: number, patch: string): number;
    stop(now: number): void;
    /** JSON text. */
    desiredProperties(): string;
    desiredVersion(): number | undefined;
    workspaceId(): string | undefined;
    deviceId(): string | undefined;
    /** The JSON text of `CoreStats`. */
    stats(): string;
    /** The JSON text of an `Output` without its byte strings. */
    pollOutput(): string;
    /** The next byte string the last `pollOutput()` announced; undefined when none is left. */
    takeBytes(): Uint8Array<ArrayBuffer> | undefined;
}

export function initSync(module: { module: SyncInitInput } | SyncInitInput): InitOutput;

export default function init(
    module_or_path?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>,
): Promise<InitOutput>;
