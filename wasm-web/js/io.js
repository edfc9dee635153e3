// Network I/O of the driver: the rule about unencrypted URLs, MQTT over WebSocket, and the
// core's HTTP requests with `fetch`. Everything goes through the global object, so the same code
// runs in a page and in a worker.

/** @import { Output } from "./vdev_web_core.js" */

/**
 * A readable description of a thrown value (an `Error`, a `DOMException`, anything else).
 * @param {any} error
 * @returns {string}
 */
export const describe = (error) =>
  error && error.name && error.message !== undefined ? `${error.name}: ${error.message}` : String(error);

/**
 * Whether `host` (as `URL.hostname` writes it) is loopback: localhost, 127.0.0.0/8 or [::1].
 * @param {string} host
 */
export const isLoopbackHost = (host) =>
  host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);

/**
 * Why `url` may not be used, or undefined when it may: `ws://` and `http://` would carry tokens
 * unencrypted, so they are allowed for loopback hosts only; `wss://` and `https://` anywhere.
 * @param {string} url
 * @returns {string | undefined}
 */
export function urlProblem(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return `'${url}' is not a valid url`;
  }
  const scheme = parsed.protocol;
  if (scheme === "wss:" || scheme === "https:") return;
  if (scheme === "ws:" || scheme === "http:") {
    if (isLoopbackHost(parsed.hostname)) return;
    return `refusing unencrypted ${url}: ws:// and http:// are allowed only for loopback hosts, use wss:// or https://`;
  }
  return `unsupported url scheme '${scheme}' in ${url}`;
}

/**
 * Opens the MQTT WebSocket to `url` (subprotocol `mqtt`, binary frames). `on.open()`,
 * `on.data(bytes)` and `on.closed(reason)` hear what happens until `closeSocket`. Throws a
 * reason string when the socket cannot even be created.
 * @param {string} url
 * @param {{ open(): void, data(bytes: Uint8Array): void, closed(reason: string): void }} on
 */
export function openSocket(url, on) {
  if (!/^wss?:\/\//.test(url)) throw `${url} is not a websocket url`;
  const problem = urlProblem(url);
  if (problem) throw problem;
  let socket;
  try {
    socket = new WebSocket(url, "mqtt");
  } catch (error) {
    throw `cannot open ${url}: ${describe(error)}`;
  }
  socket.binaryType = "arraybuffer";
  socket.onopen = on.open;
  socket.onmessage = (event) =>
    event.data instanceof ArrayBuffer
      ? on.data(new Uint8Array(event.data))
      : on.closed("the gateway sent a text frame; mqtt needs binary frames");
  // An `error` event is always followed by `close`, which carries the details.
  socket.onclose = (event) =>
    on.closed(`websocket closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`);
  return socket;
}

/**
 * Closes a socket and silences it: the core has already forgotten the connection.
 * @param {WebSocket} socket
 */
export function closeSocket(socket) {
  socket.onopen = socket.onmessage = socket.onclose = null;
  socket.close();
}

/**
 * Performs an `http` output of the core: resolves to `{ status, retryAfter, body }` or rejects
 * with a reason (network failure, refused URL, or the request's deadline, where it is aborted:
 * the core gives up on it then anyway).
 * @param {Extract<Output, { kind: "http" }>} request
 * @param {number} now
 */
export async function perform(request, now) {
  const problem = urlProblem(request.url);
  if (problem) throw problem;
  const controller = new AbortController();
  const abort = setTimeout(() => controller.abort(), Math.max(0, request.deadline - now));
  try {
    const response = await fetch(request.url, {
      method: request.method,
      headers: request.headers,
      body: request.body.length ? request.body : undefined,
      signal: controller.signal,
    });
    const body = new Uint8Array(await response.arrayBuffer());
    return { status: response.status, retryAfter: response.headers.get("retry-after") ?? undefined, body };
  } catch (error) {
    throw describe(error);
  } finally {
    clearTimeout(abort);
  }
}
