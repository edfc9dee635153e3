// The core's HTTP requests on Node.js, with `node:http` and `node:https` rather than `fetch`:
// Node's `fetch` cannot be told to trust more certificate authorities, and the app's `ca` must
// hold for every TLS connection of the device (its Platform's HTTPS API and blob storage too),
// not only MQTT. The rules are the browser host's (io.js): no redirect is followed (the core
// checked every URL it hands over), the body is read up to one byte past the core's limit
// (the core judges an answer that is too long), and a request still running at its deadline is
// aborted (the core takes that as no answer in time).

import { request as plainRequest } from "node:http";
import { request as tlsRequest } from "node:https";
import { rootCertificates } from "node:tls";
import { describe } from "./io.js";

/**
 * Performs an `http` output: resolves to `{ status, retryAfter, body }` or rejects with a reason.
 * @param {{ method: string, url: string, headers: [string, string][], body: Uint8Array, deadline: number, maxResponseBytes: number }} request
 * @param {number} now
 * @param {string | Uint8Array | undefined} ca the app's certificate authorities (PEM)
 * @param {AbortSignal} [stopped] aborts the request when the device stops, so that nothing
 *   keeps the process alive after `stop()`
 * @returns {Promise<{ status: number, retryAfter: string | undefined, body: Uint8Array }>}
 */
export function perform(request, now, ca, stopped) {
  return new Promise((resolve, reject) => {
    const url = new URL(request.url);
    const secure = url.protocol === "https:";
    /** @type {Record<string, string>} */
    const headers = {};
    for (const [name, value] of request.headers) headers[name] = value;
    const options = {
      method: request.method,
      headers,
      signal: stopped,
      ...(secure && ca !== undefined ? { ca: [...rootCertificates, Buffer.from(ca).toString()] } : {}),
    };
    let settled = false;
    /** @param {() => void} settle */
    const once = (settle) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      settle();
    };
    const outgoing = (secure ? tlsRequest : plainRequest)(url, options, (response) => {
      /** @type {Buffer[]} */
      const chunks = [];
      let size = 0;
      const done = () =>
        once(() => {
          const retryAfter = response.headers["retry-after"];
          resolve({ status: response.statusCode ?? 0, retryAfter, body: new Uint8Array(Buffer.concat(chunks)) });
        });
      response.on("data", (/** @type {Buffer} */ chunk) => {
        chunks.push(chunk);
        size += chunk.length;
        if (size > request.maxResponseBytes) {
          // The core sees the answer is too long; the rest is never read.
          done();
          response.destroy();
        }
      });
      response.on("end", done);
      response.on("error", (error) => once(() => reject(describe(error))));
    });
    const deadline = setTimeout(
      () => outgoing.destroy(new Error("no answer before the deadline")),
      Math.max(0, request.deadline - now),
    );
    outgoing.on("error", (error) => once(() => reject(describe(error))));
    outgoing.end(request.body.length ? request.body : undefined);
  });
}
