#!/usr/bin/env bash
# The demo: one command to a Platform with its technician console and a page of virtual devices.
# Installs what is missing, builds the vdev-web package and the demo site, starts vdev-platform
# with a ready Provisioning Token and serves the demo, all on loopback; prints the two URLs.
# Ctrl+C stops everything.
#
# Options: --skip-setup   do not run tests/setup.sh (installs)
#          --skip-build   use the built wasm package, Platform and demo site as they are
# Environment: VDEV_DEMO_HTTP (Platform, default 127.0.0.1:8080), VDEV_DEMO_PORT (demo site,
#   default 5173; 0 = any free port), VDEV_DEMO_DATA_DIR (default demo-site/.data: the Platform's
#   state, kept across runs so devices resume).
#   VDEV_DEMO_TLS_IP (e.g. 127.0.0.1): the Platform as a real instance is instead
#   (--contract iothub): devices reach it only over https:// and wss:// on port 443 (and MQTT
#   over TLS on 8883) of that loopback address, under the host name VDEV_DEMO_HOST_NAME (default
#   hub.vdev.test), which the browser must resolve there and whose test CA it must trust (the
#   CA's path is printed); VDEV_DEMO_HTTP then serves the console and admin API only. Port 443
#   needs root.
set -euo pipefail
site="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$site/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
setup=1
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-setup) setup=0 ;;
    --skip-build) build=0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
platform_http="${VDEV_DEMO_HTTP:-127.0.0.1:8080}"
demo_port="${VDEV_DEMO_PORT:-5173}"
data_dir="${VDEV_DEMO_DATA_DIR:-$site/.data}"
step() { printf '\n==> %s\n' "$*"; }

if [ "$setup" = 1 ]; then bash "$root/tests/setup.sh"; fi
if [ "$build" = 1 ]; then
  step "browser SDK package (wasm-web/scripts/build.sh)"
  bash "$root/wasm-web/scripts/build.sh"
  step "stand-in Platform"
  cargo build -p vdev-platform --manifest-path "$root/Cargo.toml"
  step "demo site"
  bash "$site/build.sh"
fi
platform_bin="$CARGO_TARGET_DIR/debug/vdev-platform"
[ -x "$platform_bin" ] || { echo "error: $platform_bin is missing: run without --skip-build" >&2; exit 1; }
[ -f "$site/dist/index.html" ] || { echo "error: demo-site/dist is missing: run without --skip-build" >&2; exit 1; }

mkdir -p "$data_dir"
logs="$(mktemp -d "${TMPDIR:-/tmp}/vdev-demo.XXXXXX")"
pids=()
stop_all() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

# Polls for a line in a log file for up to 30 s; fails early if the process died.
wait_for_line() {
  local file="$1" pattern="$2" pid="$3" deadline=$((SECONDS + 30))
  until grep -q "$pattern" "$file" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "error: it stopped; its output:" >&2; cat "$file" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "error: timed out waiting for \"$pattern\" in $file" >&2; exit 1; }
    sleep 0.1
  done
}

step "starting vdev-platform on $platform_http (data: $data_dir)"
tls_ip="${VDEV_DEMO_TLS_IP:-}"
if [ -n "$tls_ip" ]; then
  device_listeners=(--contract iothub --host-name "${VDEV_DEMO_HOST_NAME:-hub.vdev.test}"
    --https "$tls_ip:443" --mqtt-tls "$tls_ip:8883")
else
  device_listeners=(--mqtt-tls off --https off)
fi
"$platform_bin" --data-dir "$data_dir" --http "$platform_http" --mqtt-tcp off "${device_listeners[@]}" \
  >"$logs/platform.log" 2>&1 &
pids+=($!)
wait_for_line "$logs/platform.log" "vdev-platform is running" "${pids[-1]}"

step "serving the demo site"
node "$site/serve.mjs" "$site/dist" "$demo_port" >"$logs/demo.log" 2>&1 &
pids+=($!)
wait_for_line "$logs/demo.log" '"url"' "${pids[-1]}"

# The URLs, from the Platform's platform.json (bound addresses, tokens) and the demo server.
node --input-type=module - "$data_dir/platform.json" "$logs/demo.log" <<'JS'
import { readFileSync } from "node:fs";
const info = JSON.parse(readFileSync(process.argv[2], "utf8"));
const demo = readFileSync(process.argv[3], "utf8").split("\n").map((l) => { try { return JSON.parse(l); } catch { return {}; } }).find((l) => l.url).url;
// Under the strict contract the plain listener serves the console only: devices use HTTPS.
const instance = info.httpsUrl ?? info.httpUrl;
const fragment = new URLSearchParams({ instance, token: info.provisioningToken });
console.log(`
vdev demo is running (Ctrl+C stops it)
  demo page:          ${demo}#${fragment}
  technician console: ${info.consoleUrl}#token=${info.adminToken}${info.httpsUrl ? `
  test CA:            ${info.caCertificatePath}` : ""}

1. Open the demo page and press Start: the device shows a verification code.
2. In the console, find that code under "Provisioning operations" and press Approve.
3. Back in the demo: the device connects; send messages, toggle "go offline", watch the queue drain.
4. In the console's Devices tab, set {"sampleIntervalMs": 500} as desired properties and press
   "Save twin": the device applies it and reports it back; its messages are in the Messages tab.`);
JS
echo "  logs:               $logs"
wait -n "${pids[@]}" || true
echo "error: a part of the demo stopped; logs in $logs" >&2
exit 1
