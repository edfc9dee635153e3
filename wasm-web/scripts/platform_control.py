#!/usr/bin/env python3
"""Runs vdev-platform for the browser tests and lets them stop and restart it.

A browser test cannot stop a process, so this owns the vdev-platform process and serves a tiny
loopback control API (CORS open, the test page lives on another port):

    POST /platform/stop    stops the platform (SIGTERM, SIGKILL after 10 s); answers when gone
    POST /platform/start   starts it again on the same address and data directory; answers when
                           it accepts connections
    POST/PUT /redirect/... answers 302 to a cleartext URL that is not loopback by the device's
                           rule (http://[::ffff:127.0.0.1]:<this port>/followed/...), which still
                           lands here, so a client that followed it would be counted
    POST /redirects-followed   how many requests reached /followed/... (must stay 0)
    POST/PUT /endless/...  answers 200 with a body that does not end (up to 256 MiB, until the
                           client lets go): what a wrong URL that streams looks like

The first start binds an ephemeral port; restarts reuse it, so the device's URLs stay valid.
Once the platform runs, the control URL is written to CONTROL_FILE (test.sh waits for it).
SIGTERM/SIGINT stop the platform and exit.

usage: platform_control.py PLATFORM_BIN DATA_DIR LOG_FILE CONTROL_FILE [FLAG VALUE ...]

The optional flag/value pairs replace the defaults (`--https off --mqtt-tcp off --mqtt-tls off`)
or add flags, e.g. the strict contract: `--contract iothub --https 127.0.0.9:443 ...`; the plain
HTTP listener is always there (under the strict contract it serves the admin API only).
"""

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

platform_bin, data_dir, log_path, control_file = sys.argv[1:5]
extra_flags = dict(zip(sys.argv[5::2], sys.argv[6::2]))
info_path = os.path.join(data_dir, "platform.json")
lock = threading.Lock()
process = None
followed = 0
http_address = "127.0.0.1:0"


def wait_for(what, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"vdev-platform exited (status {process.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def read_http_url():
    try:
        with open(info_path) as file:
            return json.load(file).get("httpUrl")
    except (OSError, ValueError):
        return None


def accepts_connections(address):
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def start():
    global process, http_address
    if process is not None and process.poll() is None:
        return
    first = http_address.endswith(":0")
    if first and os.path.exists(info_path):
        os.remove(info_path)
    log = open(log_path, "ab")
    flags = {"--data-dir": data_dir, "--http": http_address, "--https": "off",
             "--mqtt-tcp": "off", "--mqtt-tls": "off", **extra_flags}
    process = subprocess.Popen(
        [platform_bin, *[part for pair in flags.items() for part in pair]],
        stdout=log, stderr=subprocess.STDOUT)
    if first:
        wait_for("platform.json", read_http_url)
        http_address = read_http_url().split("://", 1)[1].rstrip("/")
    wait_for(f"the platform to listen on {http_address}", lambda: accepts_connections(http_address))


def stop():
    global process
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Control(http.server.BaseHTTPRequestHandler):
    def answer(self, status, text, headers=()):
        body = text.encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "POST, PUT, OPTIONS")
        # A device's requests carry Authorization and Content-Type: allow what the preflight asks.
        requested = self.headers.get("Access-Control-Request-Headers")
        if requested:
            self.send_header("Access-Control-Allow-Headers", requested)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_OPTIONS(self):
        self.answer(204, "")

    def endless(self):
        """Streams zeros until the client lets go (or 256 MiB, so nothing runs forever)."""
        self.send_response(200)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        chunk = b"0" * 65536
        try:
            for _ in range(4096):
                self.wfile.write(chunk)
        except OSError:
            pass  # the client stopped reading and closed: what the test wants
        self.close_connection = True

    def redirect_or_count(self):
        """Serves /redirect/..., /followed/... and /endless/...; False for any other path."""
        global followed
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/endless/"):
            self.endless()
            return True
        if self.path.startswith("/redirect/"):
            port = self.server.server_address[1]
            location = f"http://[::ffff:127.0.0.1]:{port}/followed{self.path[len('/redirect'):]}"
            self.answer(302, "", [("Location", location)])
            return True
        if self.path.startswith("/followed"):
            with lock:
                followed += 1
            self.answer(410, "a redirect was followed")
            return True
        return False

    def do_PUT(self):
        if not self.redirect_or_count():
            self.answer(404, f"no such path {self.path}")

    def do_POST(self):
        if self.redirect_or_count():
            return
        if self.path == "/redirects-followed":
            self.answer(200, str(followed))
            return
        actions = {"/platform/stop": stop, "/platform/start": start}
        action = actions.get(self.path)
        if action is None:
            self.answer(404, f"no such action {self.path}")
            return
        try:
            with lock:
                action()
            self.answer(200, "ok")
        except Exception as error:  # reported to the test, which fails with it
            self.answer(500, str(error))

    def log_message(self, *args):
        pass


def main():
    start()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Control)

    def shut_down(*_):
        stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    temporary = control_file + ".tmp"
    with open(temporary, "w") as file:
        file.write(f"http://127.0.0.1:{server.server_address[1]}\n")
    os.replace(temporary, control_file)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        stop()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
