#!/usr/bin/env bash
# Runs vdev-web's tests, all of them wasm_bindgen_test suites in headless browsers that drive
# the JavaScript host (js/) with the crate's wasm `Core` linked into the test. Step 1 runs in
# Chromium, Firefox (ESR) and WebKitGTK (step 2 in Chromium and Firefox only so far):
#   1. tests/store.rs (js/store.js against the core's storage contract), tests/api.rs (the JS
#      API's refusals, no network), tests/init.rs (`start` before `init()`), tests/host.rs (the
#      host's own rules: callbacks never nest, the tab protocol version), tests/platform.rs
#      (DeviceClient against a real vdev-platform), tests/reasons.rs (failures and their
#      reasons), tests/streams.rs (batches, slices, chunks and completions at the Platform).
#      VDEV_WEB_ENGINES (default "chromium firefox webkit") picks the engines.
#      WebKit's pages are served from http://[::1] (it does not count http://127.0.0.1 as a
#      secure context), and its API suite's insecure-page test runs once more from 127.0.0.1;
#   2. tests/quota.rs, a real QuotaExceededError: the browser's profile goes on a 256 MB tmpfs
#      (TMPDIR of the runner, where chromedriver and geckodriver make it), so the site's quota
#      is small enough to fill. Mounting needs root; without it this step is skipped, saying so;
#   3. tests/strict.rs, the package against a second vdev-platform in its strict contract
#      (--contract iothub: HTTPS on 443 and MQTT/TLS on 8883 of its own loopback address, under
#      a host name each engine resolves there), over wss:// and https:// with its test
#      certificate, in each engine. Port 443 needs root; without it this step is skipped.
# At the end, one line per engine sums up its suites: "browser <engine> <version>: N passed,
# M failed" (added to VDEV_BROWSER_RESULTS when set, for tests/run-all.sh's totals).
# It starts vdev-platform on an ephemeral loopback port with a temporary data directory, through
# scripts/platform_control.py, a loopback control server that lets the tests stop and restart
# the platform (same port, same data directory). The platform's URL and tokens and the control
# URL reach the wasm tests at compile time (VDEV_WEB_TEST_* read with `option_env!`): a wasm
# test cannot read files or the environment at run time, and baking them in costs only a
# re-link of the test crates. The platform is stopped on exit.
#
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli 0.2.130 (same version as the
# `wasm-bindgen` crate), Debian's chromium and chromium-driver, firefox-esr and geckodriver
# (crates.io), webkit2gtk-driver and xvfb, certutil (libnss3-tools), python3 (tests/setup.sh
# installs them).
# Extra arguments go to the wasm `cargo test` (e.g. `-- provisioning`).
set -euo pipefail

web_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$(cd "$web_dir/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

expected_bindgen="0.2.130"
if ! command -v wasm-bindgen-test-runner >/dev/null; then
    echo "error: wasm-bindgen-test-runner not found: cargo install wasm-bindgen-cli --version $expected_bindgen" >&2
    exit 1
fi
if ! wasm-bindgen --version | grep -q " $expected_bindgen\$"; then
    echo "error: wasm-bindgen-cli must be $expected_bindgen (found: $(wasm-bindgen --version))" >&2
    exit 1
fi
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
if [ ! -x "$CHROMEDRIVER" ]; then
    echo "error: $CHROMEDRIVER not found: apt-get install -y chromium chromium-driver" >&2
    exit 1
fi
for tool in firefox-esr geckodriver WebKitWebDriver Xvfb certutil; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool not found: bash tests/setup.sh installs it" >&2
        exit 1
    fi
done

# wasm-bindgen copies into a test's snippets/ folder only the js/ files the tests name in a
# `module = "..."` import (tests/common/mod.rs), not the siblings those import; a module left
# unnamed is missing there and the browser cannot load the test, which the runner reports only as
# "Failed to detect test as having been run". index.js is the package entry: it imports the
# wasm-bindgen glue of the npm build, which the tests replace with their own `provideCore`.
for module in "$web_dir"/js/*.js; do
    name="$(basename "$module")"
    if [ "$name" != index.js ] && ! grep -qF "module = \"/js/$name\"" "$web_dir/tests/common/mod.rs"; then
        echo "error: tests/common/mod.rs does not import js/$name, so the browser tests would not find it" >&2
        exit 1
    fi
done

echo "== vdev-web: building vdev-platform"
cargo build -p vdev-platform
platform_bin="$CARGO_TARGET_DIR/debug/vdev-platform"

work_dir="$(mktemp -d -t vdev-web-test.XXXXXX)"
data_dir="$work_dir/data"
log_file="$work_dir/platform.log"
control_file="$work_dir/control.url"
mkdir -p "$data_dir"
control_pid=""
strict_pid=""
webkit_driver_pid=""
# shellcheck source=../../tests/browsers.sh
source "$root/tests/browsers.sh"
quota_fs="$work_dir/quota-fs"
quota_mounted=0
cleanup() {
    for pid in $control_pid $strict_pid $webkit_driver_pid $xvfb_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$quota_mounted" = 1 ]; then
        umount "$quota_fs" || true
    fi
    rm -rf "$work_dir"
}
trap cleanup EXIT

python3 "$web_dir/scripts/platform_control.py" "$platform_bin" "$data_dir" "$log_file" \
    "$control_file" 2>>"$log_file" &
control_pid=$!

# Wait (bounded) until the platform has bound its listener and written platform.json.
read_info() {
    python3 - "${1:-$data_dir}/platform.json" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
for key in ("httpUrl", "adminToken", "workspaceId", "provisioningToken"):
    value = info.get(key)
    if not value:
        sys.exit(1)
    print(value)
PY
}
deadline=$((SECONDS + 60))
until [ -s "$control_file" ] && info="$(read_info 2>/dev/null)"; do
    if ! kill -0 "$control_pid" 2>/dev/null; then
        echo "error: vdev-platform (or its control server) exited:" >&2
        cat "$log_file" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "error: vdev-platform was not up within 60 s" >&2
        cat "$log_file" >&2
        exit 1
    fi
    sleep 0.2
done
VDEV_WEB_TEST_CONTROL_URL="$(cat "$control_file")"
export VDEV_WEB_TEST_CONTROL_URL
{
    read -r VDEV_WEB_TEST_HTTP_URL
    read -r VDEV_WEB_TEST_ADMIN_TOKEN
    read -r VDEV_WEB_TEST_WORKSPACE
    read -r VDEV_WEB_TEST_PROVISIONING_TOKEN
} <<<"$info"
export VDEV_WEB_TEST_HTTP_URL VDEV_WEB_TEST_ADMIN_TOKEN VDEV_WEB_TEST_WORKSPACE VDEV_WEB_TEST_PROVISIONING_TOKEN
echo "== vdev-platform at $VDEV_WEB_TEST_HTTP_URL (control: $VDEV_WEB_TEST_CONTROL_URL)"

# One line per engine: "browser <engine> <version>: N passed, M failed", from cargo's results.
summarise() {
    python3 - "$@" <<'PY'
import re, sys
engine, version, log = sys.argv[1:4]
passed = failed = 0
for found in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed", open(log, errors="replace").read()):
    passed += int(found.group(1))
    failed += int(found.group(2))
print(f"browser {engine} {version}: {passed} passed, {failed} failed")
PY
}
# summarise, and add the engine's figures to VDEV_BROWSER_RESULTS when set (tests/run-all.sh
# sums each engine's suites and end-to-end tests into one line at the end).
record() {
    local line
    line="$(summarise "$@")"
    echo "$line"
    if [ -n "${VDEV_BROWSER_RESULTS:-}" ]; then
        echo "$line" | sed -E 's/^browser ([^ ]+) ([^ ]+): ([0-9]+) passed, ([0-9]+) failed$/\1 \2 \3 \4/' \
            >>"$VDEV_BROWSER_RESULTS"
    fi
}

# The suites every engine runs: the store, the JS API, the host's rules and a real Platform.
all_suites=(--test store --test api --test init --test host --test platform --test reasons --test streams)
suites=("${all_suites[@]}")
# The runner looks for webdriver.json (extra Chrome flags, Firefox preferences) in the working
# directory. wasm-bindgen's runner drives Firefox when GECKODRIVER is set, Chromium otherwise.
cd "$web_dir"
# run_suites <engine> [env assignments / -u NAME ...]: runs "${suites[@]}" "${test_args[@]}" in
# the engine the environment selects, adding cargo's results to <engine>'s log.
run_suites() {
    local engine="$1"
    shift
    echo "== vdev-web: browser tests (headless $engine)"
    local status=0
    env "$@" CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
        WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}" \
        cargo test -p vdev-web --target wasm32-unknown-unknown "${suites[@]}" "${test_args[@]}" \
        2>&1 | tee -a "$work_dir/$engine.log" || status=$?
    if [ "$status" -ne 0 ]; then
        summarise "$engine" "?" "$work_dir/$engine.log"
        echo "== vdev-platform log (last 60 lines)" >&2
        tail -n 60 "$log_file" >&2
        exit "$status"
    fi
}
# A port free on `host` now (the runner binds it a moment later).
free_port() {
    python3 -c 'import socket, sys; s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}
user_args=("$@")
test_args=("${user_args[@]}")
engines=" ${VDEV_WEB_ENGINES:-chromium firefox webkit} "
if [[ "$engines" == *" chromium "* ]]; then
    run_suites chromium -u GECKODRIVER -u SAFARIDRIVER
fi
if [[ "$engines" == *" firefox "* ]]; then
    # Firefox asks the user before it grants persistent storage; webdriver.json's preferences
    # answer yes, as a user would (the SDK does not wait for the answer either way).
    run_suites firefox -u SAFARIDRIVER GECKODRIVER="${GECKODRIVER:-$(command -v geckodriver)}"
fi
if [[ "$engines" == *" webkit "* ]]; then
    # WebKitGTK's WebDriver starts its MiniBrowser, which needs a display: a private Xvfb gives
    # it one (-displayfd picks a free display number). wasm-bindgen's runner drives it through
    # its Safari path (SAFARIDRIVER), the W3C protocol both speak.
    start_private_xvfb "$work_dir"
    webkit_env=(-u GECKODRIVER DISPLAY="$xvfb_display"
        SAFARIDRIVER="${SAFARIDRIVER:-$(command -v WebKitWebDriver)}")
    # WebKit does not count http://127.0.0.1 as a secure context (a page there has no Web
    # Locks), while http://[::1] and http://localhost are secure, as in every other engine. So
    # the suites are served on ::1 (the runner then needs a fixed port: a free one is picked)...
    run_suites webkit "${webkit_env[@]}" WASM_BINDGEN_TEST_ADDRESS="[::1]:$(free_port ::1)"
    # ...and the API suite's insecure-page test runs once more from http://127.0.0.1, where the
    # SDK must refuse to start and say why.
    suites=(--test api)
    test_args=(-- not_a_secure_context)
    run_suites webkit "${webkit_env[@]}"
    suites=("${all_suites[@]}")
    test_args=("${user_args[@]}")
fi

echo "== vdev-web: QuotaExceededError test (the browser's profile on a 256 MB tmpfs)"
# Chromium and Firefox both size a site's quota from the free space of the profile's disk, and
# both drivers make the profile in TMPDIR. Firefox's limit for a site that is not persisted is
# its group limit (a fifth of half the free space); one that is persisted may use far more, so
# there the user declines persist(), through webdriver-quota.json's preferences.
mkdir -p "$quota_fs"
quota_engines=()
[[ "$engines" == *" chromium "* ]] && quota_engines+=(chromium)
[[ "$engines" == *" firefox "* ]] && quota_engines+=(firefox)
if [ "${#quota_engines[@]}" = 0 ]; then
    echo "== SKIPPED tests/quota.rs: neither Chromium nor Firefox is among VDEV_WEB_ENGINES" >&2
elif mount -t tmpfs -o size=256m tmpfs "$quota_fs" 2>/dev/null; then
    quota_mounted=1
    python3 - "$web_dir/webdriver.json" "$work_dir/webdriver-quota.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["moz:firefoxOptions"]["prefs"]["dom.storageManager.prompt.testing.allow"] = False
json.dump(config, open(sys.argv[2], "w"), indent=2)
PY
    for engine in "${quota_engines[@]}"; do
        echo "== vdev-web: the quota test in $engine"
        case "$engine" in
            chromium) engine_env=(-u GECKODRIVER -u SAFARIDRIVER) ;;
            firefox) engine_env=(-u SAFARIDRIVER GECKODRIVER="${GECKODRIVER:-$(command -v geckodriver)}") ;;
        esac
        env "${engine_env[@]}" \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="env TMPDIR=$quota_fs wasm-bindgen-test-runner" \
            WASM_BINDGEN_TEST_WEBDRIVER_JSON="$work_dir/webdriver-quota.json" \
            WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}" \
            cargo test -p vdev-web --target wasm32-unknown-unknown --test quota "$@" \
            2>&1 | tee -a "$work_dir/$engine.log"
    done
else
    echo "== SKIPPED tests/quota.rs: cannot mount a tmpfs (needs root)" >&2
fi

echo "== vdev-web: the strict contract over wss:// and https:// at a host name (tests/strict.rs)"
# The stand-in as a real instance is (--contract iothub): HTTPS on 443 and MQTT over TLS on 8883
# of a loopback address of its own, under the host name hub.vdev.test (blob storage under
# blob.hub.vdev.test). Port 443 needs root.
if [ "$(id -u)" = 0 ]; then
    strict_ip="127.0.0.$((RANDOM % 200 + 30))"
    strict_hub="hub.vdev.test"
    strict_dir="$work_dir/strict"
    strict_control="$work_dir/strict-control.url"
    mkdir -p "$strict_dir"
    python3 "$web_dir/scripts/platform_control.py" "$platform_bin" "$strict_dir" "$log_file" \
        "$strict_control" --contract iothub --host-name "$strict_hub" \
        --https "$strict_ip:443" --mqtt-tls "$strict_ip:8883" 2>>"$log_file" &
    strict_pid=$!
    deadline=$((SECONDS + 60))
    until [ -s "$strict_control" ] && strict_info="$(read_info "$strict_dir" 2>/dev/null)"; do
        if ! kill -0 "$strict_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "error: the strict-contract vdev-platform did not start:" >&2
            tail -n 30 "$log_file" >&2
            exit 1
        fi
        sleep 0.2
    done
    {
        read -r VDEV_WEB_STRICT_ADMIN_URL
        read -r VDEV_WEB_STRICT_ADMIN_TOKEN
        read -r VDEV_WEB_STRICT_WORKSPACE
        read -r VDEV_WEB_STRICT_PROVISIONING_TOKEN
    } <<<"$strict_info"
    VDEV_WEB_STRICT_CONTROL_URL="$(cat "$strict_control")"
    VDEV_WEB_STRICT_HUB="$strict_hub"
    export VDEV_WEB_STRICT_ADMIN_URL VDEV_WEB_STRICT_ADMIN_TOKEN VDEV_WEB_STRICT_WORKSPACE \
        VDEV_WEB_STRICT_PROVISIONING_TOKEN VDEV_WEB_STRICT_CONTROL_URL VDEV_WEB_STRICT_HUB
    # Each engine resolves the two names to the Platform's address and trusts its test CA in
    # the way that engine offers:
    # - Chromium: --host-resolver-rules, and the server key's hash in
    #   --ignore-certificate-errors-spki-list (Chromium has no flag for a CA of its own);
    # - Firefox: the CA in the certificate store (certutil, NSS) of a profile of its own, and
    #   network.dns.forceResolve, which sends every name it looks up to the Platform's address
    #   (the test's other addresses are IP literals, which it does not look up);
    # - WebKit: the Platform's certificate allowed for the two names, and a CONNECT proxy that
    #   sends the two names there, both as session capabilities, which scripts/webkit_driver.py
    #   adds (wasm-bindgen's runner asks WebKit for a session with none).
    spki="$(openssl x509 -in "$strict_dir/tls/server.pem" -pubkey -noout \
        | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)"
    strict_profile="$work_dir/firefox-strict-profile"
    mkdir -p "$strict_profile"
    certutil -N -d "sql:$strict_profile" --empty-password
    certutil -A -d "sql:$strict_profile" -n "vdev-platform test CA" -t "C,," -i "$strict_dir/tls/ca.pem"
    python3 - "$web_dir/webdriver.json" "$work_dir/webdriver-strict.json" "$strict_hub" "$strict_ip" "$spki" \
        "$strict_profile" <<'PY'
import json, sys
source, target, hub, ip, spki, profile = sys.argv[1:7]
config = json.load(open(source))
config["goog:chromeOptions"]["args"] += [
    f"--host-resolver-rules=MAP {hub} {ip},MAP blob.{hub} {ip}",
    f"--ignore-certificate-errors-spki-list={spki}",
]
firefox = config["moz:firefoxOptions"]
firefox["args"] = firefox.get("args", []) + ["-profile", profile]
firefox["prefs"]["network.dns.forceResolve"] = ip
json.dump(config, open(target, "w"), indent=2)
PY
    strict_engines=()
    [[ "$engines" == *" chromium "* ]] && strict_engines+=(chromium)
    [[ "$engines" == *" firefox "* ]] && strict_engines+=(firefox)
    [[ "$engines" == *" webkit "* ]] && strict_engines+=(webkit)
    for engine in "${strict_engines[@]}"; do
        echo "== vdev-web: the strict contract in $engine"
        case "$engine" in
            chromium) engine_env=(-u GECKODRIVER -u SAFARIDRIVER) ;;
            firefox) engine_env=(-u SAFARIDRIVER GECKODRIVER="${GECKODRIVER:-$(command -v geckodriver)}") ;;
            webkit)
                start_private_xvfb "$work_dir"
                DISPLAY="$xvfb_display" python3 "$web_dir/scripts/webkit_driver.py" \
                    "$work_dir/webkit-driver.url" "$strict_dir/tls/server.pem" "$strict_ip" \
                    "$strict_hub" "blob.$strict_hub" 2>>"$log_file" &
                webkit_driver_pid=$!
                deadline=$((SECONDS + 60))
                until [ -s "$work_dir/webkit-driver.url" ]; do
                    if ! kill -0 "$webkit_driver_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
                        echo "error: scripts/webkit_driver.py did not start" >&2
                        exit 1
                    fi
                    sleep 0.2
                done
                engine_env=(-u GECKODRIVER -u SAFARIDRIVER
                    SAFARIDRIVER_REMOTE="$(cat "$work_dir/webkit-driver.url")"
                    WASM_BINDGEN_TEST_ADDRESS="[::1]:$(free_port ::1)")
                ;;
        esac
        env "${engine_env[@]}" CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
            WASM_BINDGEN_TEST_WEBDRIVER_JSON="$work_dir/webdriver-strict.json" \
            WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}" \
            cargo test -p vdev-web --target wasm32-unknown-unknown --test strict "$@" \
            2>&1 | tee -a "$work_dir/$engine.log"
    done
else
    echo "== SKIPPED tests/strict.rs: the strict contract listens on port 443 (needs root)" >&2
fi

# One line per engine that ran: every suite of it, with the quota and strict steps in Chromium's.
[ -s "$work_dir/chromium.log" ] &&
    record chromium "$(browser_version chromium)" "$work_dir/chromium.log"
[ -s "$work_dir/firefox.log" ] &&
    record firefox "$(browser_version firefox)" "$work_dir/firefox.log"
[ -s "$work_dir/webkit.log" ] && record webkit "$(browser_version webkit)" "$work_dir/webkit.log"
exit 0
