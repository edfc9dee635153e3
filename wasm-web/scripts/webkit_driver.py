#!/usr/bin/env python3
"""WebKitWebDriver for tests at a host name over TLS (tests/strict.rs, the e2e TLS demo test).

wasm-bindgen's test runner drives WebKit through its Safari path, which asks for a session with
no capabilities at all (it reads no webdriver.json for Safari). WebKitGTK takes two things a
test at a host name over TLS needs only as capabilities:

- `webkitgtk:browserOptions.certificates`: the Platform's certificate, trusted for its host
  names (WebKitGTK's way to trust a certificate of one's own; it has no CA flag or variable);
- a proxy: WebKit has no host-resolver flag, so https:// and wss:// go through a proxy, and
  this script is that proxy: it answers CONNECT for the mapped names only, to the Platform's
  loopback address, so nothing leaves loopback. The browser is given it in `https_proxy`: the
  WebDriver `proxy` capability makes WebKitGTK speak TLS to the proxy itself, and check the
  proxy's certificate against the system's CAs only.

So this script serves, on a free loopback port, both the WebDriver API (every request passed on
to a WebKitWebDriver it starts, but a new session gets the capability above) and the CONNECT
proxy. The runner is pointed at it with SAFARIDRIVER_REMOTE. Once listening, the URL is written
to URL_FILE. SIGTERM/SIGINT stop the driver and exit.

usage: webkit_driver.py URL_FILE CERTIFICATE_PEM IP NAME [NAME ...]
"""

import http.client
import http.server
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    url_file, certificate, ip, *names = sys.argv[1:]
    if not names or not ip.startswith("127."):
        sys.exit("usage: webkit_driver.py URL_FILE CERTIFICATE_PEM 127.x.y.z NAME [NAME ...]")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), None)
    address = f"127.0.0.1:{server.server_address[1]}"
    capabilities = {
        "webkitgtk:browserOptions": {
            "certificates": [{"host": name, "certificateFile": certificate} for name in names],
        },
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_CONNECT(self):
            host, _, port = self.path.rpartition(":")
            if host not in names:
                self.send_error(403, f"{host} is not a name of the test Platform")
                return
            try:
                upstream = socket.create_connection((ip, int(port)), timeout=10)
            except OSError as error:
                self.send_error(502, str(error))
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            upstream.settimeout(None)
            self.connection.settimeout(None)
            sockets = [self.connection, upstream]
            try:
                while True:
                    readable, _, _ = select.select(sockets, [], [])
                    for source in readable:
                        data = source.recv(65536)
                        if not data:
                            return
                        (upstream if source is self.connection else self.connection).sendall(data)
            except OSError:
                pass
            finally:
                upstream.close()
                self.close_connection = True

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.command == "POST" and self.path.rstrip("/") == "/session":
                request = json.loads(body or b"{}")
                always = request.setdefault("capabilities", {}).setdefault("alwaysMatch", {})
                always.update(capabilities)
                request.pop("desiredCapabilities", None)
                body = json.dumps(request).encode()
            connection = http.client.HTTPConnection("127.0.0.1", driver_port, timeout=600)
            connection.request(self.command, self.path, body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.getheader("Content-Type") or "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

        do_GET = do_POST = do_DELETE = forward

    server.RequestHandlerClass = Handler
    # The browser takes its proxy from the environment (libproxy reads https_proxy when no
    # desktop's settings are there): https:// and wss:// go to the CONNECT proxy below, plain
    # http:// (the test page, the control server) goes direct.
    driver_port = free_port()
    environment = dict(os.environ, https_proxy=f"http://{address}", no_proxy="")
    environment.pop("http_proxy", None)
    driver = subprocess.Popen(["WebKitWebDriver", f"--port={driver_port}"], env=environment)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", driver_port), timeout=1).close()
            break
        except OSError:
            if driver.poll() is not None or time.monotonic() > deadline:
                sys.exit("WebKitWebDriver did not start")
            time.sleep(0.1)

    def stop(*_):
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(url_file + ".tmp", "w") as f:
        f.write(f"http://{address}")
    os.replace(url_file + ".tmp", url_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
