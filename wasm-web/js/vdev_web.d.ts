// The TypeScript types of the npm package `vdev-web`, written by hand: the package is a bundle of
// hand-written JavaScript (js/index.js and the modules it imports) and wasm-bindgen's glue of the
// internal `Core` binding, whose generated types describe the binding, not this API.
// tests/web-app-types checks them with `tsc --strict`.

/** Where the device connects, where it keeps its queue, and whom it tells what happens. */
export interface StartOptions {
    /** The Platform instance: a host name (`https://` is implied) or a URL; `http://` only for loopback hosts. */
    instance: string;
    /** The Provisioning Token. */
    provisioningToken: string;
    /** The Device ID to ask for; the Platform or the technician decides when absent. */
    deviceId?: string;
    /**
     * Where this device's queue, identity and twin are kept: in a browser, the name of an
     * IndexedDB database; on Node.js, a directory (created when missing; one process at a time).
     */
    database: string;
    /**
     * Node.js only: how to reach the gateway. `"tls"` (the default there): MQTT over TLS, port
     * 8883 unless the Platform announces another; `"tcp"`: plain MQTT where the Platform
     * announces it on a loopback address, TLS otherwise; `"websocket"`: MQTT over WebSocket
     * (needs Node.js 22 or later). A browser always uses WebSocket and refuses the others.
     */
    transport?: "tls" | "tcp" | "websocket";
    /**
     * Node.js only: certificate authorities (PEM text, or the contents of a PEM file) trusted for
     * TLS besides the system's, e.g. a test Platform's own CA.
     */
    ca?: string | Uint8Array;
    /** Shown to the technician who approves the provisioning operation. */
    provisioningParameters?: Record<string, string>;
    /**
     * Where the device logs: each event at its level (`error`: storage trouble; `warn`: a
     * failure worked around or a message given up; `info`: provisioning and the connection;
     * `debug`: every message's progress), and a callback that threw (`error`). `console`
     * fits; by default errors alone go to `console.error`, and `{}` logs nothing.
     */
    logger?: Logger;
    /**
     * Numbers to tune; the defaults suit a real Platform. Each is checked at `start`: a value
     * out of its bounds (or an unknown name) is an `invalidOption` naming it.
     */
    tunables?: Tunables;
    /**
     * The Brotli encoder for streams that ask for compression: `await loadBrotli()` from
     * `vdev-web/brotli` (a separate module, so the default bundle carries no encoder). The
     * Node.js build has its own and needs none.
     */
    brotli?: BrotliEncoder;
    /** A provisioning operation waits for approval: show its verification code. */
    onProvisioningOperation?: (operation: ProvisioningOperation) => void;
    /** Provisioning stopped for good (cancelled, token refused), and why; messages stay queued. */
    onProvisioningFailed?: (reason: ProvisioningFailure) => void;
    /** The desired properties changed (also called once after the first fetch). */
    onDesiredPropertiesChanged?: (properties: Record<string, unknown>, version: number) => void;
    /** The connection state changed. */
    onConnectionStateChanged?: (state: ConnectionState) => void;
    /** A message was delivered to the Platform, or will never be. */
    onMessageOutcome?: (outcome: MessageOutcome) => void;
    /** A cloud-to-device message arrived. */
    onCloudToDeviceMessage?: (message: CloudToDeviceMessage) => void;
    /**
     * The device went offline (`true`: the browser's `offline` event or `setOffline(true)`) or
     * back online (`false`). Messages sent while offline are stored and wait.
     */
    onOfflineChanged?: (offline: boolean) => void;
    /**
     * Every event of the device, in the core's one vocabulary (the same events, names and
     * fields a WASI app receives), with the reason of every failure.
     */
    onEvent?: (event: DeviceEvent) => void;
}

/** A log level, most severe first. */
export type LogLevel = "error" | "warn" | "info" | "debug";

/** Where the device logs (`console` is one): a method per level; a level without one is not logged. */
export type Logger = { [L in LogLevel]?: (...details: unknown[]) => void };

/** The numbers a device may tune (whole numbers; ms: milliseconds, at most a day). */
export interface Tunables {
    /** MQTT keep-alive interval, 1–65535 s (default 60). */
    keepAliveSeconds?: number;
    /** How long a PINGRESP may take before the connection counts as dead (default 20,000 ms). */
    pingTimeoutMs?: number;
    /** How long opening a connection, its CONNACK and SUBACK may take together (default 30,000 ms). */
    connectTimeoutMs?: number;
    /** How long a message may wait for its acknowledgement before the connection counts as broken (default 60,000 ms). */
    ackTimeoutMs?: number;
    /** Messages awaiting their acknowledgement at once, 1–65535 (default 256). */
    maxInFlight?: number;
    /** Most messages stored at once (default 10,000,000); a send past it is refused with `outboxFull`. */
    outboxMaxMessages?: number;
    /** Most bytes of stored messages at once (default 1 GiB); a send past it is refused with `outboxFull`. */
    outboxMaxBytes?: number;
    /** First retry and reconnect delay (default 1,000 ms); it doubles up to `retryMaxMs`. */
    retryInitialMs?: number;
    /** Longest retry and reconnect delay, not below `retryInitialMs` (default 60,000 ms). */
    retryMaxMs?: number;
    /** How long an HTTP request may take (default 30,000 ms; uploads get more per byte). */
    httpTimeoutMs?: number;
    /** How long a twin request may stay unanswered before it is sent again (default 30,000 ms). */
    twinTimeoutMs?: number;
    /** How often to ask whether provisioning was approved (default 2,000 ms). */
    provisioningPollIntervalMs?: number;
}

/**
 * Why a connection to the gateway ended or could not be opened (the device reconnects after a
 * backoff delay). `message` is for people; match on `code`.
 */
export type ConnectionLoss =
    | { code: "refused"; message: string; /** The CONNACK return code, 1–5. */ returnCode: number }
    | { code: "unreachable"; message: string }
    | { code: "closed"; message: string }
    | { code: "connectTimedOut"; message: string }
    | { code: "keepAliveTimedOut"; message: string }
    | { code: "ackTimedOut"; message: string }
    | { code: "subscriptionRefused"; message: string }
    | { code: "protocol"; message: string }
    /** Cleartext to a host that is not loopback: never opened. */
    | { code: "insecure"; message: string };

/** Which request to the Platform's HTTP API. */
export type RequestKind =
    | "provisioningInit"
    | "provisioningComplete"
    | "register"
    | "refreshToken"
    | "uploadSlot"
    | "uploadBlob"
    | "uploadNotify";

/** Why one HTTP request failed. */
export type RequestFailure =
    | {
          code: "status";
          message: string;
          status: number;
          /** The RFC 7807 problem type, when the answer was a problem document. */
          problemType: string | null;
          detail: string | null;
      }
    /** No answer: the browser's network error (DNS, refused, TLS, CORS), in its words. */
    | { code: "network"; message: string }
    | { code: "timedOut"; message: string }
    /** A redirect, never followed (`status` null when the browser hid it); retried later. */
    | { code: "redirected"; message: string; status: number | null }
    /** Cleartext to a host that is not loopback: never sent. */
    | { code: "insecure"; message: string }
    /** A success whose body could not be read (not JSON, a field missing); asked again later. */
    | { code: "malformed"; message: string };

/** Why provisioning stopped for good. */
export type ProvisioningFailure =
    | { code: "cancelled"; message: string; operationId: string }
    | { code: "invalidProvisioningToken"; message: string }
    | { code: "refused"; message: string; failure: RequestFailure };

/** Why the Registration Token was dropped (the device provisions again, keeping its queue). */
export type TokenDiscardReason =
    | { code: "expired"; message: string }
    | { code: "refused"; message: string; request: RequestKind; failure: RequestFailure };

/** Why the storage failed. */
export type StoreFailure =
    | { code: "quotaExceeded"; message: string }
    | { code: "failed"; message: string };

/** Why a message will never be delivered. */
export type RejectReason =
    | { code: "notStored"; message: string; storeError: StoreFailure }
    | { code: "corrupt"; message: string }
    /** Its upload failed for good (refused, or a cleartext URL off loopback): on which step, and how. */
    | { code: "uploadRefused"; message: string; request: RequestKind; failure: RequestFailure }
    | { code: "unencodable"; message: string }
    /** The gateway closed the connection on it again and again, for minutes: it refuses it. */
    | { code: "refusedByGateway"; message: string; attempts: number; minutes: number };

/** Every event of the device, by `kind`. */
export type DeviceEvent =
    | { kind: "provisioningOperation"; id: string; verificationCode: string; expiresAt: number }
    | { kind: "registered"; workspaceId: string; deviceId: string }
    | { kind: "provisioningFailed"; reason: ProvisioningFailure }
    | { kind: "connectionStateChanged"; state: ConnectionState }
    /** The device went offline (the browser's or the app's word) or online again. */
    | { kind: "offlineChanged"; offline: boolean }
    | { kind: "connectionLost"; reason: ConnectionLoss }
    | { kind: "requestFailed"; request: RequestKind; failure: RequestFailure }
    | { kind: "registrationTokenDiscarded"; reason: TokenDiscardReason }
    /** Messages `first..=last` are durably stored (their `sendMessage` promises resolve). */
    | { kind: "messagesStored"; first: number; last: number }
    | { kind: "messageDelivered"; seq: number }
    | { kind: "messageRejected"; seq: number; reason: RejectReason }
    | { kind: "desiredPropertiesChanged"; properties: Record<string, unknown>; version: number }
    | { kind: "reportedPropertiesAcknowledged" }
    /** Reported-properties updates up to this revision are durably stored. */
    | { kind: "reportedPropertiesStored"; revision: number }
    | { kind: "reportedPropertiesRejected"; status: number }
    /** The gateway sent a packet larger than the device takes; it was discarded. */
    | { kind: "packetDropped"; size: number; limit: number }
    /** `properties`: its topic's property bag, decoded (a name given twice keeps its last value). */
    | { kind: "cloudToDeviceMessage"; properties: Record<string, string>; payload: Uint8Array }
    /** A storage operation failed; the device asks for it again later. */
    | { kind: "storeFailed"; operation: "load" | "remove" | "saveState" | "reserve"; reason: StoreFailure }
    | { kind: "savedStateDiscarded"; reason: string }
    /** The store cut an unreadable tail when it opened (the WASI file outbox does). */
    | { kind: "outboxRecovered"; file: string; validBytes: number; cutBytes: number; reason: string };

/** A provisioning operation waiting for a technician. */
export interface ProvisioningOperation {
    id: string;
    verificationCode: string;
    /** Milliseconds since the Unix epoch. */
    expiresAt: number;
}

export type ConnectionState =
    | "provisioning"
    | "disconnected"
    | "connecting"
    | "connected"
    | "failed"
    | "stopped";

/** The final outcome of a stored message, by its sequence number. */
export type MessageOutcome =
    | { sequence: number; status: "delivered" }
    | { sequence: number; status: "rejected"; reason: RejectReason };

export interface CloudToDeviceMessage {
    /**
     * The property bag of the message's topic, decoded: the sender's properties and the
     * Platform's (`$.mid`, `$.to`, ...). A `%` that is not an escape stays as written; a name
     * given twice keeps its last value.
     */
    properties: Record<string, string>;
    payload: Uint8Array;
}

/**
 * Brotli at its fastest setting (quality 1) or its smallest (quality 11); a payload goes
 * compressed only when that is smaller. Needs a Brotli encoder (`StartOptions.brotli`).
 */
export type Compression = "none" | "fastest" | "smallestSize";

/** Encodes payloads with Brotli: what `loadBrotli()` of `vdev-web/brotli` gives. */
export interface BrotliEncoder {
    /**
     * `payload` Brotli-encoded at `quality` (1 the fastest to 11 the smallest), called at once
     * while a message is stored; `payload` is the encoder's own copy. If it throws, the payload
     * is sent as it is.
     */
    encode(payload: Uint8Array, quality: number): Uint8Array;
}

/** Where a sender's messages go at the Platform, and how they travel. */
export interface StreamSenderOptions {
    /** The stream group; the Platform's default when absent. */
    streamGroup?: string;
    /** The stream within the group; the Platform's default when absent. */
    stream?: string;
    /** The site the messages come from. */
    siteId?: string;
    /** `"none"` by default. */
    compression?: Compression;
}

/**
 * The ids that place a message within its stream: a batch (closed by
 * `enqueueBatchCompletion`), a message within it (closed by `enqueueMessageCompletion`, for a
 * message sent in chunks), a slice of the batch and a chunk of the message.
 */
export interface MessageOptions {
    batchId?: string;
    messageId?: string;
    batchSliceId?: string;
    chunkId?: string;
}

/** How long a waiting call waits: until `signal` aborts (it rejects with the signal's reason)
 * or `timeout` milliseconds pass (it rejects with `timedOut`). Giving up stops the waiting,
 * never what is waited for: queued messages stay queued and still go out. */
export interface WaitOptions {
    signal?: AbortSignal;
    timeout?: number;
}

/** `deliverMessage`'s options: the message's and the wait's. */
export interface DeliveryOptions extends MessageOptions, WaitOptions {}

/**
 * The events a `DeviceClient` dispatches: every event of the device, under its `kind`, as a
 * `CustomEvent` whose `detail` is the event (what `onEvent` is given).
 */
export type DeviceEventMap = {
    [K in DeviceEvent["kind"]]: CustomEvent<Extract<DeviceEvent, { kind: K }>>;
};

export interface Statistics {
    /** Messages stored and not yet delivered or rejected. */
    pendingCount: number;
    /** Their bytes in the store. */
    pendingBytes: number;
    /** When the oldest of them was enqueued (ms since the epoch), if known. */
    oldestEnqueuedAt: number | null;
    /** Records held in memory. */
    windowRecords: number;
    connectionState: ConnectionState;
    /** Offline: the browser or `setOffline(true)` says there is no network; nothing is sent. */
    offline: boolean;
    /**
     * `"owner"`: this client drives the device; `"follower"`: another client of the same
     * database (another tab) does, and this one forwards its calls to it.
     */
    role: "owner" | "follower";
    /**
     * Whether the browser granted persistent storage (`navigator.storage.persist()`, asked at
     * start, not waited for): the queue is then not evicted under storage pressure or by
     * Safari's seven-day rule. `null` until the browser answers (Firefox asks the user), or
     * where it cannot say.
     */
    persistentStorage: boolean | null;
}

export interface DesiredProperties {
    properties: Record<string, unknown>;
    /** Null until the device has fetched its twin once. */
    version: number | null;
}

/**
 * A device: provisions itself, keeps a durable queue in IndexedDB and forwards it in order.
 * An `EventTarget` of the device's events (`DeviceEventMap`); the start options' callbacks are
 * a shortcut, and only `onEvent` sees the events of `start` itself.
 */
export class DeviceClient extends EventTarget {
    private constructor();
    /**
     * Listens to one kind of the device's events, e.g. `"messageDelivered"` (the
     * `CustomEvent`'s `detail` is `{ kind, seq }`).
     */
    addEventListener<K extends keyof DeviceEventMap>(
        type: K,
        listener: ((this: DeviceClient, event: DeviceEventMap[K]) => void) | { handleEvent(event: DeviceEventMap[K]): void } | null,
        options?: boolean | AddEventListenerOptions,
    ): void;
    removeEventListener<K extends keyof DeviceEventMap>(
        type: K,
        listener: ((this: DeviceClient, event: DeviceEventMap[K]) => void) | { handleEvent(event: DeviceEventMap[K]): void } | null,
        options?: boolean | EventListenerOptions,
    ): void;
    /**
     * A sender for one stream (the workspace's defaults when the names are absent). A
     * `compression` other than `"none"` without a Brotli encoder is refused here with
     * `compressionUnavailable`.
     */
    createStreamSender(options?: StreamSenderOptions | null): StreamSender;
    /**
     * The desired properties (the saved copy until the first fetch) and their version.
     */
    desiredProperties(): DesiredProperties;
    /**
     * Messages stored and not yet delivered or rejected.
     */
    pendingMessagesCount(): number;
    /**
     * Takes the device offline (`true`) or lets it go online again (`false`), e.g. for a "go
     * offline" switch or an app that knows better than the browser. The device is offline
     * while the app says so *or* the browser does (its `offline` event): the connection is
     * closed, nothing is sent or fetched, and sends are stored to go out, in order, later.
     */
    setOffline(offline: boolean): void;
    /**
     * Opens the database, resumes what it holds (identity, tokens, queue, twin) and starts
     * the device. Resolves as soon as it runs; provisioning and connecting go on after that.
     */
    static start(options: StartOptions): Promise<DeviceClient>;
    /**
     * Queue and connection figures.
     */
    statistics(): Statistics;
    /**
     * Disconnects, finishes pending storage work and closes the database. Queued messages
     * stay stored for the next start.
     */
    stop(): Promise<void>;
    /**
     * Forgets the device: stops it and deletes what it stored (queue, identity, tokens, twin;
     * on Node.js the outbox's files, and the directory when nothing else is in it), so that
     * the next `start` with this database provisions a new device. Refused with
     * `messagesPending` while stored messages are not delivered, unless `force` (they are
     * dropped); in a tab that only follows, with `coordinationFailed`.
     */
    forget(options?: { force?: boolean } | null): Promise<void>;
    /**
     * Merges `patch` into the reported properties (JSON merge patch: `null` deletes). Resolves
     * once the change is saved; it reaches the Platform when connected, across restarts.
     */
    updateReportedProperties(patch: Record<string, unknown>): Promise<void>;
    /**
     * The desired properties and their version when it is above `version` (the one the app
     * has applied); `undefined` when the app is up to date, or before the first fetch.
     */
    desiredPropertiesIfNewer(version: number): DesiredProperties | undefined;
    /** Whether a reported-properties update waits for the Platform's acknowledgement. */
    readonly reportedPropertiesPending: boolean;
    /**
     * Resolves once no message is pending (delivered or rejected, every one); rejects when
     * `options.signal` aborts or `options.timeout` ms pass first (the messages stay queued).
     */
    waitEnqueuedMessagesSent(options?: WaitOptions | null): Promise<void>;
    /**
     * The Device ID, once registered.
     */
    readonly deviceId: string | undefined;
    /**
     * Whether the device is offline (the browser's `offline` event or `setOffline(true)`).
     */
    readonly offline: boolean;
    /**
     * The workspace id, once registered.
     */
    readonly workspaceId: string | undefined;
}

/**
 * Sends messages to one stream.
 */
export class StreamSender {
    private constructor();
    /**
     * Queues the marker that completes batch `batchId`; resolves to its sequence number.
     */
    enqueueBatchCompletion(batchId: string): Promise<number>;
    /**
     * Queues the marker that completes message `messageId` of batch `batchId`.
     */
    enqueueMessageCompletion(batchId: string, messageId: string): Promise<number>;
    /**
     * Queues a message. Resolves to its sequence number once it is durably stored (never
     * waits for the network); rejects when it cannot be stored.
     */
    sendMessage(payload: Uint8Array | string, options?: MessageOptions | null): Promise<number>;
    /**
     * Queues a message and resolves to its sequence number once the Platform acknowledged
     * it. Rejects with `messageRejected` (the error's `reason` says why) when it never will
     * be, as `sendMessage` does when it cannot be stored, and when `options.signal` aborts or
     * `options.timeout` ms pass first (the message stays queued and still goes out).
     */
    deliverMessage(payload: Uint8Array | string, options?: DeliveryOptions | null): Promise<number>;
}

/** What went wrong in a refused or failed call: match on it, show `message`. */
export type VdevErrorCode =
    /** An option or argument is missing, mistyped or refused (the message names it). */
    | "invalidOption"
    /** `DeviceClient.start` before `init()`. */
    | "notInitialized"
    /** A call after `stop()`. */
    | "stopped"
    /** The message is invalid (e.g. a property too long). */
    | "invalidMessage"
    /** A stream asks for compression and the device has no Brotli encoder (`StartOptions.brotli`). */
    | "compressionUnavailable"
    /** The outbox is full (its count or bytes limit). */
    | "outboxFull"
    /** The browser's storage quota for the site is exhausted; messages stored before are kept. */
    | "quotaExceeded"
    /** The storage failed otherwise (IndexedDB's error in the message). */
    | "storageFailed"
    /** IndexedDB is missing or the database cannot be opened. */
    | "storageUnavailable"
    /** The reported-properties patch is refused (e.g. a reserved `$` name). */
    | "invalidPatch"
    /** Tabs of this database could not agree on who drives the device. */
    | "coordinationFailed"
    /** Another tab runs another version of vdev-web: reload it. */
    | "versionMismatch"
    /** Node.js: another process (or client) uses the outbox directory. */
    | "storeLocked"
    /** A waiting call's `timeout` passed first (what it waited for goes on). */
    | "timedOut"
    /** `deliverMessage`: the message will never be delivered; `reason` says why. */
    | "messageRejected"
    /** `forget` without `force` while stored messages are not delivered yet. */
    | "messagesPending";

/** The error of every refused or failed call of the API (rejected promises and throws). */
export class VdevError extends Error {
    readonly name: "VdevError";
    readonly code: VdevErrorCode;
    /** `messageRejected`: the message's sequence number. */
    readonly sequence?: number;
    /** `messageRejected`: why it will never be delivered. */
    readonly reason?: RejectReason;
}

/** Where `init` gets the wasm module: a URL or request to fetch, a response, its bytes, or the module. */
export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

/** What `initSync` instantiates: the wasm module's bytes or the compiled module. */
export type SyncInitInput = BufferSource | WebAssembly.Module;

/**
 * The instantiated wasm module. Its only public part is its memory; the rest are the
 * binding's internals.
 */
export interface InitOutput {
    readonly memory: WebAssembly.Memory;
}

/**
 * Instantiates the wasm module synchronously from its bytes or a compiled
 * `WebAssembly.Module`: the alternative to `init` when the app has fetched the module itself.
 *
 * @param module - `{ module }`; passing the `SyncInitInput` directly is deprecated.
 */
export function initSync(module: { module: SyncInitInput } | SyncInitInput): InitOutput;

/**
 * Fetches and instantiates the wasm module; call it once before `DeviceClient.start`. Without
 * an argument it loads `vdev_web_bg.wasm` next to this module (`import.meta.url`); a URL,
 * request or response is fetched/streamed, bytes or a `WebAssembly.Module` are instantiated
 * as they are.
 *
 * @param module_or_path - `{ module_or_path }`; passing the `InitInput` directly is deprecated.
 */
export default function init(
    module_or_path?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>,
): Promise<InitOutput>;
