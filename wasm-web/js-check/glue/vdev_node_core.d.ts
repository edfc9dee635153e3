// The module `vdev_node_core.js` as the Node.js host (js-node/) sees it: wasm-bindgen's glue of
// the Node.js build (`--features node`, wasm-web/src/node.rs), which scripts/build.sh generates
// for the Node.js bundle. The browser's `Core` with what that build adds, and `FileOutbox`.

import * as web from "./vdev_web_core.js";

export type { CoreOptions, CoreStats, Output, SendSettlement, StoreRequest, StoredRecord } from "./vdev_web_core.js";

/** A file operation of the core's directory outbox (`vdev_core::file_outbox::FileOp`). */
export type FileOp =
    | { op: "create"; file: string }
    | { op: "write"; file: string; offset: number; bytes: Uint8Array; sync: boolean }
    | { op: "truncate"; file: string; len: number }
    | { op: "replace"; file: string; bytes: Uint8Array }
    | { op: "delete"; file: string }
    | { op: "read"; file: string; offset: number; len: number };

/** What opening cut from a file (for `Core.storeRecovered`). */
export interface FileRecovery {
    file: string;
    validBytes: number;
    cutBytes: number;
    reason: string;
}

/** vdev-core's device, with the Node.js build's inputs. */
export class Core extends web.Core {
    fileAnswer(now: number, outbox: FileOutbox): void;
    storeRecovered(now: number, file: string, validBytes: number, cutBytes: number, reason: string): void;
}

/** The outbox directory of one device (see src/node.rs). */
export class FileOutbox {
    constructor();
    free(): void;
    static filesToRead(names: string[]): string[];
    read(file: string, content: Uint8Array): void;
    open(): { ops: FileOp[]; recoveries: FileRecovery[] };
    contents():
        | { origin: string; nextSeq: number; reserved: number | null; count: number; bytes: number; state: Uint8Array | undefined }
        | undefined;
    plan(core: Core, max: number): { ops: FileOp[]; onFailure: FileOp[]; taken: number } | undefined;
    finish(failedAt: number | null | undefined, quotaExceeded: boolean, message: string, reads: Uint8Array[]): boolean;
}

export const initSync: typeof web.initSync;
declare const init: typeof web.default;
export default init;
