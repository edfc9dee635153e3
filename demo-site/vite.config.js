// The demo is a static site: `vite build` emits dist/ with the vdev-web module and its .wasm.
import { defineConfig } from "vite";

export default defineConfig({
  // vdev-web loads its .wasm through `new URL(..., import.meta.url)`; pre-bundling would move the
  // module away from its .wasm in `vite dev`, so it is served as installed.
  optimizeDeps: { exclude: ["vdev-web"] },
  build: { target: "es2022" },
});
