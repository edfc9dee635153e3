import { defineConfig } from "vite";

// Nothing here is needed for vdev-web: Vite 8 bundles the package's
// `new URL("vdev_web_bg.wasm", import.meta.url)` as an asset in `vite build`, and its dev server's
// dependency pre-bundling rewrites that URL to the package's own file. (Vite 7's dev server did
// not: it needs `optimizeDeps: { exclude: ["vdev-web"] }`, see wasm-web/README.md, Bundlers.)
export default defineConfig(({ command }) => ({
  // The page and its message name the bundler, so the test knows which recipe it is looking at.
  define: { __VDEV_BUNDLER__: JSON.stringify(command === "serve" ? "vite-dev" : "vite-build") },
  build: { outDir: "dist/vite", emptyOutDir: true },
}));
