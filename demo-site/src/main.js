// The demo page: the settings form (prefilled from the URL fragment the demo command prints,
// remembered in localStorage) and one panel per virtual device; fleet mode runs N of them.
import init from "vdev-web";
import { DevicePanel } from "./device-panel.js";

const SETTINGS_KEY = "vdev-demo-settings";
const $ = (id) => document.getElementById(id);

function loadSettings() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_KEY)) ?? {};
  } catch {
    saved = {};
  }
  const fragment = new URLSearchParams(location.hash.slice(1));
  const settings = {
    instance: fragment.get("instance") ?? saved.instance ?? "http://127.0.0.1:8080",
    token: fragment.get("token") ?? saved.token ?? "",
    deviceId: saved.deviceId ?? `demo-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`,
    count: saved.count ?? 1,
    running: saved.running ?? false,
  };
  if (fragment.has("token") || fragment.has("instance")) {
    // Keep the token out of the address bar and history; localStorage remembers it.
    history.replaceState(null, "", location.pathname + location.search);
  }
  return settings;
}

const settings = loadSettings();
const saveSettings = () => localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
let panels = [];

$("instance").value = settings.instance;
$("token").value = settings.token;
$("device-id").value = settings.deviceId;
$("count").value = String(settings.count);
saveSettings();

function setRunning(running) {
  settings.running = running;
  saveSettings();
  for (const id of ["instance", "token", "device-id", "count", "start"]) $(id).disabled = running;
  $("stop-all").disabled = !running;
}

function deviceIds() {
  const count = settings.count;
  if (count === 1) return [settings.deviceId];
  return Array.from({ length: count }, (_, i) => `${settings.deviceId}-${i + 1}`);
}

function renderSummary() {
  const summary = $("fleet-summary");
  summary.hidden = panels.length < 2;
  summary.textContent = `Fleet mode: ${panels.length} devices in this tab, each with its own database and Device ID.`;
}

async function startDevices() {
  const error = $("settings-error");
  error.hidden = true;
  setRunning(true);
  try {
    await init();
  } catch (e) {
    error.textContent = `cannot load vdev-web: ${e.message ?? e}`;
    error.hidden = false;
    setRunning(false);
    return;
  }
  panels = deviceIds().map(
    (deviceId) =>
      new DevicePanel({
        instance: settings.instance,
        provisioningToken: settings.token,
        deviceId,
        onStopped: () => {
          panels = panels.filter((p) => p.options.deviceId !== deviceId);
          if (panels.length === 0) setRunning(false);
          renderSummary();
        },
      }),
  );
  $("devices").replaceChildren(...panels.map((p) => p.element));
  renderSummary();
  await Promise.all(panels.map((p) => p.start()));
}

$("settings").addEventListener("submit", (e) => {
  e.preventDefault();
  settings.instance = $("instance").value.trim();
  settings.token = $("token").value.trim();
  settings.deviceId = $("device-id").value.trim();
  settings.count = Math.max(1, Math.min(50, Number($("count").value) || 1));
  startDevices();
});

$("stop-all").addEventListener("click", async () => {
  $("stop-all").disabled = true;
  await Promise.all(panels.map((p) => p.stop()));
  setRunning(false);
});

// A reload restarts the devices that were running: the SDK resumes each from its database
// (identity, tokens, queue), without provisioning again.
if (settings.running) startDevices();
