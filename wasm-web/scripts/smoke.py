#!/usr/bin/env python3
"""Loads the packaged module (the output of build.sh, after wasm-opt) in headless Chromium
through chromedriver and checks that it instantiates, starts a client, stores a message and
stops. The test suites run the unoptimised debug build; this catches a broken release build
(DESIGN.md section 6: an old wasm-opt once produced a module Chromium refused).

Usage: smoke.py PKG_DIR   (needs chromium + chromium-driver; loopback only)
"""

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>vdev-web smoke</title></head>
<body><pre id="out">pending</pre><script type="module">
import init, { DeviceClient } from "./vdev_web.js";
const out = document.getElementById("out");
try {
  await init();
  // Port 9 on loopback: nothing answers, nothing leaves the machine; the message stays queued.
  const client = await DeviceClient.start({
    instance: "http://127.0.0.1:9", provisioningToken: "smoke",
    database: "vdev-smoke-" + Math.random().toString(36).slice(2),
  });
  const sender = client.createStreamSender({ compression: "fastest" });
  const seq = await sender.sendMessage("hello");
  const pending = client.pendingMessagesCount();
  await client.stop();
  out.textContent = "ok sequence=" + seq + " pending=" + pending;
} catch (e) { out.textContent = "failed: " + e; }
</script></body></html>"""

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
    site = tempfile.mkdtemp(prefix="vdev-smoke-")
    for name in ("vdev_web.js", "vdev_web_bg.wasm"):
        shutil.copy(os.path.join(pkg, name), site)
    with open(os.path.join(site, "index.html"), "w") as page:
        page.write(PAGE)

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {".wasm": "application/wasm", ".js": "text/javascript", ".html": "text/html"}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=site, **kwargs)

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

        webdriver(driver_port, "POST", f"/session/{session}/url", {"url": f"{origin}/index.html"})
        text = wait_for(lambda t: t != "pending", "the smoke page")
        print(f"smoke: {text}")
        failures = 0 if text == "ok sequence=0 pending=1" else 1

        print(f"smoke: {1 - failures} passed, {failures} failed")
        return 0 if failures == 0 else 1
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
