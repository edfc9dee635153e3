// Serves a built site (default: this demo's dist/) on loopback with Vite's preview server and
// prints one JSON line `{"url": ...}` once listening, so scripts and tests can use port 0.
// Usage: node serve.mjs [DIST_DIR] [PORT]     (PORT 0 = any free port; default 5173)
import path from "node:path";
import { fileURLToPath } from "node:url";
import { preview } from "vite";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(process.argv[2] ?? path.join(here, "dist"));
const port = Number(process.argv[3] ?? 5173);

const server = await preview({
  root: path.dirname(dist),
  configFile: false,
  logLevel: "warn",
  build: { outDir: path.basename(dist) },
  preview: { host: "127.0.0.1", port, strictPort: true, open: false },
});
const address = server.httpServer.address();
// The URL names localhost, not 127.0.0.1: browsers give Web Locks (which the SDK needs) to
// secure contexts only, and WebKit counts http://localhost as one but not http://127.0.0.1.
// localhost may resolve to ::1 first; browsers then try 127.0.0.1, where this listens.
console.log(JSON.stringify({ url: `http://localhost:${address.port}/` }));
const stop = () => server.close().then(() => process.exit(0));
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
