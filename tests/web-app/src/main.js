// The entry for Vite (build and dev server) and webpack: each rewrites the package's
// `new URL("vdev_web_bg.wasm", import.meta.url)` to a wasm it serves (an emitted asset, or under
// Vite's dev server the package's own file), so the plain `init()` finds it.
import { runApp } from "./app.js";

runApp();
