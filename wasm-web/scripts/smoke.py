#!/usr/bin/env python3
"""Loads the packaged module (the output of build.sh: the one bundled vdev_web.js and
vdev_web_bg.wasm, after wasm-opt) in headless Chromium through chromedriver and checks that it
instantiates, starts a client, stores a message, goes offline, stores a reported patch and stops,
once per way of loading the wasm: `init()` (the default URL, vdev_web_bg.wasm next to
vdev_web.js), `init({ module_or_path })` with another URL, and `initSync({ module })` with the
bytes. The page is served with only those two files (plus the wasm under another name) and the
opt-in Brotli module's two (`vdev_brotli.js`, `vdev_brotli_bg.wasm`), so a bundle that still
imports a module of its own, or loads a wasm of another name, fails here. Each page first asks
for a compressed stream without an encoder (refused with `compressionUnavailable`), then starts
its client with `loadBrotli()`'s encoder and stores a compressible message in a compressed
stream. The
test suites run the unminified debug build; this catches a broken release build
(docs/architecture.md, "Toolchain notes": an old wasm-opt once produced a module Chromium
refused) or a minifier that breaks the host.

First it checks that the packed tarball in PKG_DIR (`npm pack`'s vdev-web-*.tgz) carries every
file the package promises, the licence texts included.

Usage: smoke.py PKG_DIR   (needs chromium + chromium-driver; loopback only)
"""

import glob
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request

# The wasm under another name: the explicit URL and the bytes of initSync come from it, so the
# default name is requested only by `init()`.
OTHER_WASM = "renamed.wasm"

PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>vdev-web smoke</title></head>
<body><pre id="out">pending</pre><script type="module">
import init, { initSync, DeviceClient } from "./vdev_web.js";
import loadBrotli from "./vdev_brotli.js";
const out = document.getElementById("out");
try {
  const mode = "MODE";
  // Before the module is instantiated, start says what is missing.
  const early = await DeviceClient.start({ instance: "http://127.0.0.1:9", provisioningToken: "smoke",
    database: "never-opened" }).then(() => "started", (e) => e.message);
  if (early !== "the wasm module is not initialised: call init() first") throw new Error("before init: " + early);
  if (mode === "default") {
    await init();
  } else if (mode === "url") {
    await init({ module_or_path: new URL("OTHER_WASM", location.href) });
  } else {
    const bytes = await (await fetch("OTHER_WASM")).arrayBuffer();
    initSync({ module: bytes });
  }
  // Port 9 on loopback: nothing answers, nothing leaves the machine; the message stays queued.
  const plain = await DeviceClient.start({
    instance: "http://127.0.0.1:9", provisioningToken: "smoke",
    database: "vdev-smoke-" + Math.random().toString(36).slice(2),
  });
  const refused = (() => { try { plain.createStreamSender({ compression: "fastest" }); return "created"; } catch (e) { return e.code; } })();
  if (refused !== "compressionUnavailable") throw new Error("compression without an encoder: " + refused);
  await plain.stop();
  const brotli = await loadBrotli();
  const reading = new TextEncoder().encode("temperature 21.5; ".repeat(100));
  const encoded = brotli.encode(reading, 1);
  if (!(encoded instanceof Uint8Array) || encoded.length >= reading.length / 10) throw new Error("brotli encoded to " + encoded.length);
  const client = await DeviceClient.start({
    instance: "http://127.0.0.1:9", provisioningToken: "smoke",
    database: "vdev-smoke-" + Math.random().toString(36).slice(2), brotli,
  });
  const sender = client.createStreamSender({ compression: "fastest" });
  const seq = await sender.sendMessage(reading);
  client.setOffline(true);
  // Resolves after the client has handled setOffline, so the getters below say offline.
  await client.updateReportedProperties({ smoke: true });
  const pending = client.pendingMessagesCount();
  const offline = client.offline && client.statistics().offline;
  const version = client.desiredProperties().version;
  await client.stop();
  out.textContent = `ok sequence=${seq} pending=${pending} offline=${offline} version=${version}`;
} catch (e) { out.textContent = "failed: " + e; }
</script></body></html>"""

# What the page says when everything worked: the message is stored (not sent: nothing listens
# on the port, then offline), no twin fetched yet.
EXPECTED = "ok sequence=0 pending=1 offline=true version=null"

# mode -> the wasm file the page must fetch (and the one it must not)
MODES = {
    "default": ("vdev_web_bg.wasm", OTHER_WASM),
    "url": (OTHER_WASM, "vdev_web_bg.wasm"),
    "sync": (OTHER_WASM, "vdev_web_bg.wasm"),
}


# The files the tarball must hold (npm puts them under `package/`): the `files` list of the
# package.json that build.sh writes, and package.json itself.
PACKED = ("package.json", "vdev_web.js", "vdev_web.d.ts", "vdev_web_bg.wasm", "vdev_node.js",
          "vdev_node_bg.wasm", "vdev_brotli.js", "vdev_brotli.d.ts", "vdev_brotli_bg.wasm",
          "vdev_brotli_node.js", "README.md", "LICENSE-MIT", "LICENSE-APACHE")


def check_tarball(pkg):
    """Problems with the one vdev-web-*.tgz in `pkg` (an empty list when there are none)."""
    tarballs = glob.glob(os.path.join(pkg, "vdev-web-*.tgz"))
    if len(tarballs) != 1:
        return [f"expected one vdev-web-*.tgz in {pkg}, found {len(tarballs)}"]
    name = os.path.basename(tarballs[0])
    with tarfile.open(tarballs[0]) as tar:
        packed = {path[len("package/"):] for path in tar.getnames() if path.startswith("package/")}
    print(f"smoke (tarball): {name} holds {', '.join(sorted(packed))}")
    missing = [path for path in PACKED if path not in packed]
    return [f"{name} lacks {', '.join(missing)}"] if missing else []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def webdriver(port, method, path, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["value"]


def main():
    pkg = os.path.abspath(sys.argv[1])
    tarball_problems = check_tarball(pkg)
    if tarball_problems:
        print(f"smoke (tarball) FAILED: {'; '.join(tarball_problems)}")
    site = tempfile.mkdtemp(prefix="vdev-smoke-")
    for name in ("vdev_web.js", "vdev_web_bg.wasm", "vdev_brotli.js", "vdev_brotli_bg.wasm"):
        shutil.copy(os.path.join(pkg, name), site)
    shutil.copy(os.path.join(pkg, "vdev_web_bg.wasm"), os.path.join(site, OTHER_WASM))
    for mode in MODES:
        with open(os.path.join(site, f"{mode}.html"), "w") as page:
            page.write(PAGE.replace("OTHER_WASM", OTHER_WASM).replace("MODE", mode))
    requests = []  # (path, status) of every request the server answered

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {".wasm": "application/wasm", ".js": "text/javascript", ".html": "text/html"}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=site, **kwargs)

        def end_headers(self):
            # Every load fetches again: the wasm of one mode must not come from the cache of another.
            self.send_header("Cache-Control", "no-store")
            super().end_headers()

        def log_request(self, code="-", size="-"):
            requests.append((self.path, int(code)))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver_port = free_port()
    driver = subprocess.Popen(
        [os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"), f"--port={driver_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    session = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                webdriver(driver_port, "GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        options = {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-quic",
                     f"--user-data-dir={site}/profile"],
        }
        if os.path.exists("/usr/bin/chromium"):
            options["binary"] = "/usr/bin/chromium"
        session = webdriver(driver_port, "POST", "/session", {
            "capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})["sessionId"]
        origin = f"http://127.0.0.1:{server.server_address[1]}"

        def run(script):
            return webdriver(driver_port, "POST", f"/session/{session}/execute/sync",
                             {"script": script, "args": []})

        def wait_for(condition, what):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = run("return document.getElementById('out').textContent")
                if condition(text):
                    return text
                time.sleep(0.1)
            raise SystemExit(f"smoke: timed out waiting for {what} (page says {text!r})")

        failures = 0
        for mode, (wanted, unwanted) in MODES.items():
            requests.clear()
            webdriver(driver_port, "POST", f"/session/{session}/url", {"url": f"{origin}/{mode}.html"})
            text = wait_for(lambda t: t != "pending", f"the smoke page ({mode})")
            fetched = {path.lstrip("/") for path, status in requests if status == 200}
            missing = sorted(path for path, status in requests if status == 404)
            problems = []
            if text != EXPECTED:
                problems.append(f"page says {text!r}")
            if wanted not in fetched:
                problems.append(f"{wanted} was not fetched")
            if "vdev_brotli_bg.wasm" not in fetched:
                problems.append("vdev_brotli_bg.wasm was not fetched")
            if unwanted in fetched:
                problems.append(f"{unwanted} was fetched too")
            if missing:
                problems.append(f"not found: {', '.join(missing)}")
            print(f"smoke ({mode}): {text}; fetched {', '.join(sorted(fetched))}")
            if problems:
                failures += 1
                print(f"smoke ({mode}) FAILED: {'; '.join(problems)}")

        print(f"smoke: {len(MODES) - failures} passed, {failures} failed")
        return 0 if failures == 0 and not tarball_problems else 1
    finally:
        if session:
            try:
                webdriver(driver_port, "DELETE", f"/session/{session}")
            except OSError:
                pass
        driver.terminate()
        driver.wait()
        server.shutdown()
        shutil.rmtree(site, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
