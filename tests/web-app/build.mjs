// Builds the app with webpack 5 (webpack.config.js, through its Node API) and esbuild (the
// options below, its JS API) into dist/webpack and dist/esbuild, each with an index.html made
// from the Vite page's (index.html) with the bundle's own script tag. `vite build` is build.sh's.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import webpack from "webpack";
import webpackConfig from "./webpack.config.js";

const app = path.dirname(fileURLToPath(import.meta.url));
const page = readFileSync(path.join(app, "index.html"), "utf8");
const viteScript = '<script type="module" src="/src/main.js"></script>';
if (!page.includes(viteScript)) throw new Error(`index.html has no ${viteScript}`);

function writePage(dir, script) {
  writeFileSync(path.join(dir, "index.html"), page.replace(viteScript, script));
}

// webpack
const stats = await new Promise((resolve, reject) =>
  webpack(webpackConfig, (error, result) => (error ? reject(error) : resolve(result))),
);
if (stats.hasErrors()) throw new Error(`webpack:\n${stats.toString("errors-only")}`);
const main = stats.toJson({ all: false, entrypoints: true }).entrypoints.main.assets.map((a) => a.name);
// A classic script: webpack's default output is one (not an ES module), and finds its assets
// (publicPath "auto") through document.currentScript first.
writePage(webpackConfig.output.path, main.map((file) => `<script defer src="./${file}"></script>`).join(""));

// esbuild
const esbuildOut = path.join(app, "dist", "esbuild");
await esbuild.build({
  absWorkingDir: app,
  entryPoints: [{ in: "src/main-esbuild.js", out: "main" }],
  bundle: true,
  // ES module output keeps import.meta.url, which main-esbuild.js resolves the wasm's name against.
  format: "esm",
  minify: true,
  outdir: esbuildOut,
  loader: { ".wasm": "file" },
  define: { __VDEV_BUNDLER__: JSON.stringify("esbuild") },
  logLevel: "warning",
});
writePage(esbuildOut, '<script type="module" src="./main.js"></script>');
