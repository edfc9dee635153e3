#!/usr/bin/env bash
# Installs what the builds, tests and demo need and a fresh machine of this kind lacks: Rust targets
# and components, Debian packages, wasm-bindgen-cli. Idempotent and quick when all is there.
# Called by tests/run-all.sh, tests/e2e/run.sh and demo-site/run.sh.
set -euo pipefail

step() { printf '\n==> %s\n' "$*"; }

step "toolchain targets"
installed_targets=$(rustup target list --installed)
for target in wasm32-unknown-unknown wasm32-wasip2; do
  grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

step "system packages"
# mosquitto-clients: an independent MQTT peer; mosquitto: the broker, the benchmarks' anchor of
# MQTT.js with no Platform in the way (Node.js, over TCP: Debian's build has no WebSocket
# listener, so the browser cannot reach it); libssl-dev + pkg-config: the official SDK's OpenSSL;
# chromium + chromium-driver: the browser tests and the demo's Playwright test; firefox-esr: the
# browser suites in Firefox too (its WebDriver, geckodriver, comes from crates.io);
# webkit2gtk-driver + xvfb: the browser suites in WebKitGTK (WebKitWebDriver starts its
# MiniBrowser, which needs a display: a private Xvfb); libnss3-tools: certutil, which puts the
# strict test's CA in a Firefox profile; strace: the
# Platform test that every acknowledgement follows a flush to disk (node, npm and python3 come
# with the machine).
missing=()
for pkg in mosquitto-clients mosquitto libssl-dev pkg-config chromium chromium-driver firefox-esr \
  webkit2gtk-driver xvfb libnss3-tools strace; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (it comes with the machine)" >&2; exit 1; }
done

step "wasm-bindgen-cli 0.2.130 (must equal the wasm-bindgen crate)"
if ! wasm-bindgen --version 2>/dev/null | grep -q ' 0\.2\.130$'; then
  # Without --locked: its lockfile wants a crate version the registry here lacks.
  cargo install wasm-bindgen-cli --version 0.2.130
fi

step "geckodriver 0.37.1 (Firefox's WebDriver; Debian has no package of it)"
if ! geckodriver --version 2>/dev/null | grep -q '^geckodriver 0\.37\.1'; then
  cargo install geckodriver --version 0.37.1 --locked
fi
