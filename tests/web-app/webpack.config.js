// webpack 5 turns the package's `new URL("vdev_web_bg.wasm", import.meta.url)` into an asset of
// its own and points the URL at it: no loader, no experiments. build.mjs runs it through
// webpack's Node API, which saves installing webpack-cli.
import path from "node:path";
import { fileURLToPath } from "node:url";
import webpack from "webpack";

const here = path.dirname(fileURLToPath(import.meta.url));

export default {
  mode: "production",
  context: here,
  entry: "./src/main.js",
  output: { path: path.join(here, "dist", "webpack"), filename: "main.[contenthash].js", clean: true },
  // The page and its message name the bundler, so the test knows which recipe it is looking at.
  plugins: [new webpack.DefinePlugin({ __VDEV_BUNDLER__: JSON.stringify("webpack") })],
};
