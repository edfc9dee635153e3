// An app that uses the whole public API of vdev-web, type-checked (never run) by run.sh with
// `tsc --strict` against the hand-written wasm-web/js/vdev_web.d.ts. Each `@ts-expect-error`
// line is a wrong usage the types must refuse: if a type turned into `any` (or lost a member),
// tsc reports the directive as unused and the test fails.
import init, {
    initSync,
    DeviceClient,
    StreamSender,
    VdevError,
    type CloudToDeviceMessage,
    type Compression,
    type ConnectionState,
    type DesiredProperties,
    type DeliveryOptions,
    type DeviceEvent,
    type DeviceEventMap,
    type Logger,
    type LogLevel,
    type InitInput,
    type InitOutput,
    type MessageOptions,
    type MessageOutcome,
    type ProvisioningFailure,
    type ProvisioningOperation,
    type RejectReason,
    type StartOptions,
    type Statistics,
    type StreamSenderOptions,
    type Tunables,
    type SyncInitInput,
    type VdevErrorCode,
    type WaitOptions,
} from "vdev-web";
import loadBrotli from "vdev-web/brotli";
import type { BrotliEncoder } from "vdev-web";

// Exact types: `Equal<A, B>` is `true` only when A and B are the same type (an `any` on either
// side makes it false), so `expectType<Equal<...>>(true)` fails for a loosened type.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(_proof: T): void {}

export async function initialise(wasmBytes: ArrayBuffer, module: WebAssembly.Module): Promise<void> {
    const output: InitOutput = await init();
    const memory: WebAssembly.Memory = output.memory;
    await init({ module_or_path: new URL("./vdev_web_bg.wasm", import.meta.url) });
    await init({ module_or_path: fetch("/assets/vdev_web_bg.wasm") });
    await init("/assets/vdev_web_bg.wasm");
    await init(module);
    const input: InitInput = wasmBytes;
    await init({ module_or_path: Promise.resolve(input) });
    const syncInput: SyncInitInput = new Uint8Array(wasmBytes);
    const synced: InitOutput = initSync({ module: syncInput });
    initSync(module);
    void [memory, synced];

    // (WebAssembly.Module is an empty interface, so almost any object passes for one: the
    // wrong usages below are the ones a type can catch.)
    // @ts-expect-error init takes a module or its location, not null
    await init(null);
    // @ts-expect-error initSync needs the module: it cannot fetch
    initSync();
    // @ts-expect-error initSync instantiates synchronously: no promise
    const pendingInit: Promise<InitOutput> = initSync(module);
    // @ts-expect-error init returns a promise
    const notAwaited: InitOutput = init();
    // @ts-expect-error the raw exports of the wasm module are not part of the API
    output.__wbindgen_malloc(1, 1);
    void [pendingInit, notAwaited];
}

export async function run(): Promise<void> {
    const seen: string[] = [];
    const options: StartOptions = {
        instance: "http://127.0.0.1:8080",
        provisioningToken: "token",
        deviceId: "thermostat-7",
        database: "vdev-thermostat-7",
        provisioningParameters: { room: "kitchen", floor: "1" },
        onProvisioningOperation: (operation: ProvisioningOperation) => {
            const expiresAt: number = operation.expiresAt;
            seen.push(operation.id, operation.verificationCode, String(expiresAt));
        },
        onProvisioningFailed: (reason: ProvisioningFailure) => {
            if (reason.code === "refused") {
                const status: string = reason.failure.code; // a refusal carries the request's failure
                seen.push(status);
            }
            seen.push(reason.message);
        },
        onDesiredPropertiesChanged: (properties: Record<string, unknown>, version: number) => {
            seen.push(`${Object.keys(properties).length}@${version}`);
        },
        onConnectionStateChanged: (state: ConnectionState) => seen.push(state),
        onMessageOutcome: (outcome: MessageOutcome) => {
            if (outcome.status === "rejected") {
                const reason: RejectReason = outcome.reason; // only a rejection has a reason
                seen.push(`${outcome.sequence}: ${reason.code} ${reason.message}`);
            } else {
                // @ts-expect-error a delivered outcome has no reason
                void outcome.reason;
            }
        },
        onCloudToDeviceMessage: (message: CloudToDeviceMessage) => {
            const payload: Uint8Array = message.payload;
            const properties: Record<string, string> = message.properties;
            seen.push(properties["$.mid"] ?? "", String(payload.byteLength));
        },
        onOfflineChanged: (offline: boolean) => seen.push(offline ? "offline" : "online"),
        onEvent: (event: DeviceEvent) => {
            if (event.kind === "connectionLost" && event.reason.code === "refused") {
                const returnCode: number = event.reason.returnCode;
                seen.push(`refused ${returnCode}: ${event.reason.message}`);
            } else if (event.kind === "requestFailed" && event.failure.code === "status") {
                const problem: string | null = event.failure.problemType;
                seen.push(`${event.request} ${event.failure.status} ${problem ?? ""}`);
            } else if (event.kind === "cloudToDeviceMessage") {
                const payload: Uint8Array = event.payload;
                seen.push(String(payload.byteLength));
            } else if (event.kind === "connectionLost") {
                // @ts-expect-error only a refusal carries a CONNACK return code
                void event.reason.returnCode;
            } else if (event.kind === "messageDelivered") {
                // @ts-expect-error a delivery has no reason
                void event.reason;
            }
        },
    };
    const client: DeviceClient = await DeviceClient.start(options);
    // The smallest start: only the required options.
    const second = await DeviceClient.start({ instance: "example.com", provisioningToken: "t", database: "d" });
    expectType<Equal<typeof second, DeviceClient>>(true);

    const compression: Compression = "smallestSize";
    const senderOptions: StreamSenderOptions = { streamGroup: "home", stream: "temperature", siteId: "s1", compression };
    const sender: StreamSender = client.createStreamSender(senderOptions);
    const defaults: StreamSender = client.createStreamSender();
    client.createStreamSender(null);
    client.createStreamSender({ compression: "none" });
    client.createStreamSender({ compression: "fastest" });
    // Compression's encoder: the opt-in module, from its default URL or another, or the app's own.
    const brotli: BrotliEncoder = await loadBrotli();
    await loadBrotli(new URL("./vdev_brotli_bg.wasm", import.meta.url));
    await loadBrotli({ module_or_path: fetch("/assets/vdev_brotli_bg.wasm") });
    const encoded: Uint8Array = brotli.encode(new Uint8Array(8), 11);
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", brotli });
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", brotli: { encode: (payload: Uint8Array) => payload } });
    expectType<Equal<typeof encoded, Uint8Array>>(true);

    const sequence: number = await sender.sendMessage(JSON.stringify({ celsius: 21.5 }));
    const messageOptions: MessageOptions = { batchId: "b1", messageId: "m1", batchSliceId: "s1", chunkId: "c1" };
    // @ts-expect-error a chunk id is a string, not its index
    await sender.sendMessage("chunk", { batchId: "b1", messageId: "m1", chunkId: 2 });
    // @ts-expect-error the slice id is spelled batchSliceId
    await sender.sendMessage("slice", { batchId: "b1", sliceId: "s1" });
    await sender.sendMessage(new Uint8Array([1, 2, 3]), messageOptions);
    await defaults.sendMessage("plain", null);
    try {
        await defaults.sendMessage("maybe refused");
    } catch (error) {
        if (error instanceof VdevError) {
            const code: VdevErrorCode = error.code;
            if (code === "outboxFull" || code === "quotaExceeded") seen.push(error.message);
            // @ts-expect-error not a code of the API
            if (error.code === "full") seen.push("never");
            // @ts-expect-error the code is read-only
            error.code = "stopped";
        }
    }
    const batchDone: number = await sender.enqueueBatchCompletion("b1");
    const messageDone: number = await sender.enqueueMessageCompletion("b1", "m1");
    expectType<Equal<ReturnType<StreamSender["sendMessage"]>, Promise<number>>>(true);

    const desired: DesiredProperties = client.desiredProperties();
    const version: number | null = desired.version;
    const properties: Record<string, unknown> = desired.properties;
    await client.updateReportedProperties({ firmware: "1.2.3", obsolete: null, nested: { a: 1 } });

    const statistics: Statistics = client.statistics();
    const pending: number = statistics.pendingCount + statistics.pendingBytes + statistics.windowRecords;
    const oldest: number | null = statistics.oldestEnqueuedAt;
    const state: ConnectionState = statistics.connectionState;
    const role: "owner" | "follower" = statistics.role;
    const statisticsOffline: boolean = statistics.offline;
    const count: number = client.pendingMessagesCount();

    client.setOffline(true);
    const offline: boolean = client.offline;
    client.setOffline(false);
    const deviceId: string | undefined = client.deviceId;
    const workspaceId: string | undefined = client.workspaceId;
    await client.waitEnqueuedMessagesSent();

    const tunables: Tunables = {
        keepAliveSeconds: 30,
        pingTimeoutMs: 10_000,
        connectTimeoutMs: 20_000,
        ackTimeoutMs: 30_000,
        maxInFlight: 64,
        outboxMaxMessages: 100_000,
        outboxMaxBytes: 64 << 20,
        retryInitialMs: 500,
        retryMaxMs: 30_000,
        httpTimeoutMs: 10_000,
        twinTimeoutMs: 10_000,
        provisioningPollIntervalMs: 1_000,
    };
    const tuned = await DeviceClient.start({ ...options, database: "vdev-tuned", tunables });
    await tuned.stop();
    const logger: Logger = { warn: (...details: unknown[]) => seen.push(String(details[1])) };
    await (await DeviceClient.start({ ...options, database: "vdev-logged", logger })).stop();
    await (await DeviceClient.start({ ...options, database: "vdev-console", logger: console })).stop();
    const level: LogLevel = "debug";
    const newer: DesiredProperties | undefined = client.desiredPropertiesIfNewer(3);
    const reportedPending: boolean = client.reportedPropertiesPending;
    void [level, newer, reportedPending];
    await tuned.forget();
    await tuned.forget({ force: true });

    // Events the DOM way: typed by their kind.
    const target: EventTarget = client;
    const onDelivered = (event: CustomEvent<{ kind: "messageDelivered"; seq: number }>) => seen.push(String(event.detail.seq));
    client.addEventListener("messageDelivered", onDelivered);
    client.removeEventListener("messageDelivered", onDelivered);
    client.addEventListener("connectionStateChanged", (event) => {
        const changed: ConnectionState = event.detail.state;
        seen.push(changed);
    }, { once: true });
    client.addEventListener("messageRejected", (event) => seen.push(event.detail.reason.code));
    client.addEventListener("cloudToDeviceMessage", {
        handleEvent: (event) => {
            const payload: Uint8Array = event.detail.payload;
            const mode: string | undefined = event.detail.properties["mode"];
            seen.push(String(payload.length), mode ?? "");
            // @ts-expect-error decoded properties are strings, not numbers
            const count: number = event.detail.properties["count"];
            // @ts-expect-error the properties are an object of strings, not a list of pairs
            event.detail.properties.forEach(() => undefined);
            void count;
        },
    });
    expectType<Equal<DeviceEventMap["registered"]["detail"], { kind: "registered"; workspaceId: string; deviceId: string }>>(true);

    // Delivery awaited, bounded by a signal and a timeout.
    const controller = new AbortController();
    const wait: WaitOptions = { signal: controller.signal, timeout: 30_000 };
    const delivery: DeliveryOptions = { ...messageOptions, ...wait };
    const delivered: number = await sender.deliverMessage("acknowledged", delivery);
    await sender.deliverMessage(new Uint8Array([4]), { timeout: 1_000 });
    await sender.deliverMessage("no options");
    try {
        await sender.deliverMessage("maybe rejected", { signal: AbortSignal.timeout(5_000) });
    } catch (error) {
        if (error instanceof VdevError && error.code === "messageRejected") {
            const reason: RejectReason | undefined = error.reason;
            const rejectedSequence: number | undefined = error.sequence;
            seen.push(String(reason?.code), String(rejectedSequence));
        }
        if (error instanceof VdevError && error.code === "timedOut") seen.push(error.message);
    }
    await client.waitEnqueuedMessagesSent({ timeout: 60_000 });
    await client.waitEnqueuedMessagesSent(wait);
    await client.waitEnqueuedMessagesSent(null);
    expectType<Equal<ReturnType<StreamSender["deliverMessage"]>, Promise<number>>>(true);
    void [target, delivered];
    await client.stop();
    await second.stop();
    void [sequence, batchDone, messageDone, version, properties, pending, oldest, state, role];
    void [statisticsOffline, count, offline, deviceId, workspaceId];
}

export async function wrongUsages(client: DeviceClient, sender: StreamSender): Promise<void> {
    // @ts-expect-error the database is required
    await DeviceClient.start({ instance: "example.com", provisioningToken: "t" });
    // @ts-expect-error an unknown option is refused (a typo of `database`)
    await DeviceClient.start({ instance: "example.com", provisioningToken: "t", database: "d", databse: "d" });
    // @ts-expect-error provisioning parameters are strings
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", provisioningParameters: { n: 1 } });
    // @ts-expect-error a callback gets the state, a string union, not a number
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", onConnectionStateChanged: (s: number) => s });
    // @ts-expect-error the constructor is private: DeviceClient.start makes clients
    new DeviceClient();
    // @ts-expect-error StreamSender's constructor is private: createStreamSender makes senders
    new StreamSender();
    // @ts-expect-error "gzip" is not a compression
    client.createStreamSender({ compression: "gzip" });
    // @ts-expect-error an encoder has an encode method
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", brotli: {} });
    // @ts-expect-error an encoder answers bytes, not text
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", brotli: { encode: () => "br" } });
    // @ts-expect-error loadBrotli resolves to the encoder: await it
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", brotli: loadBrotli() });
    // @ts-expect-error a payload is a string or a Uint8Array
    await sender.sendMessage(42);
    // @ts-expect-error an ArrayBuffer is not a payload (wrap it in a Uint8Array)
    await sender.sendMessage(new ArrayBuffer(4));
    // @ts-expect-error message ids are strings
    await sender.sendMessage("x", { batchId: 1 });
    // @ts-expect-error a message completion names its batch and its message
    await sender.enqueueMessageCompletion("b1");
    // @ts-expect-error the sequence number is a number
    const sequence: string = await sender.enqueueBatchCompletion("b1");
    // @ts-expect-error the reported properties are an object (a JSON merge patch)
    await client.updateReportedProperties("firmware=1.2.3");
    // @ts-expect-error setOffline takes a boolean
    client.setOffline("yes");
    // @ts-expect-error offline is read-only (setOffline changes it)
    client.offline = true;
    // @ts-expect-error deviceId is read-only
    client.deviceId = "other";
    // @ts-expect-error the role is "owner" or "follower"
    const role: "leader" = client.statistics().role;
    // @ts-expect-error the version may be null before the first fetch
    const version: number = client.desiredProperties().version;
    // @ts-expect-error the desired properties are unknown until checked
    const celsius: number = client.desiredProperties().properties.celsius;
    // @ts-expect-error stop resolves to nothing
    const stopped: boolean = await client.stop();
    // @ts-expect-error the wasm-bindgen internals are not part of the API
    client.free();
    // @ts-expect-error no such method
    client.send("hello");
    // @ts-expect-error a delivered message's event has no reason
    client.addEventListener("messageDelivered", (event) => event.detail.reason);
    // @ts-expect-error the connection state is a string union, not a number
    client.addEventListener("connectionStateChanged", (event: CustomEvent<{ state: number }>) => event);
    // @ts-expect-error force is a boolean
    await client.forget({ force: "yes" });
    // @ts-expect-error a logger's levels are methods
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", logger: { warn: "yes" } });
    // @ts-expect-error "trace" is not a level
    const trace: LogLevel = "trace";
    // @ts-expect-error the version to compare with is a number
    client.desiredPropertiesIfNewer("3");
    // @ts-expect-error reportedPropertiesPending is read-only
    client.reportedPropertiesPending = false;
    void trace;
    // @ts-expect-error a tunable is a number
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", tunables: { maxInFlight: "64" } });
    // @ts-expect-error an unknown tunable is refused (a typo of keepAliveSeconds)
    await DeviceClient.start({ instance: "i", provisioningToken: "t", database: "d", tunables: { keepAlive: 30 } });
    // @ts-expect-error the timeout is a number of milliseconds
    await client.waitEnqueuedMessagesSent({ timeout: "5s" });
    // @ts-expect-error the signal is an AbortSignal, not its controller
    await sender.deliverMessage("x", { signal: new AbortController() });
    // @ts-expect-error deliverMessage resolves to the sequence number
    const deliveredAs: string = await sender.deliverMessage("x");
    void [sequence, role, version, celsius, stopped, deliveredAs];
}
