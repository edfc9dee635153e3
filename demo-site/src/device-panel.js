// One virtual device and its panel: provisioning, connection, a simulated sensor, manual sends,
// the "go offline" switch, the queue's drain progress and chart, message outcomes and the twin.
import { DeviceClient } from "vdev-web";
import { DeviceChart } from "./chart.js";

const SENSOR_STREAM = { streamGroup: "demo", stream: "sensor" };
const MANUAL_STREAM = { streamGroup: "demo", stream: "manual" };
// The desired property the sensor follows, reported back once applied.
const RATE_PROPERTY = "sampleIntervalMs";
const DEFAULT_INTERVAL_MS = 2000;
const MIN_INTERVAL_MS = 100;
const MAX_INTERVAL_MS = 3_600_000;
const OUTCOMES_SHOWN = 50;
// The client's events after which the queue's figures or the connection's state may differ.
const QUEUE_EVENTS = ["messagesStored", "messageDelivered", "messageRejected", "connectionStateChanged", "offlineChanged"];
// Hidden pages get no animation frames: a render waits at most this long for one.
const RENDER_FALLBACK_MS = 250;
// The chart's time axis moves on with nothing happening; it is redrawn this often.
const CLOCK_TICK_MS = 1000;

const TEMPLATE = `
  <div class="device-head">
    <h2 data-role="title"></h2>
    <span class="pill" data-role="state">starting</span>
  </div>
  <div class="provisioning-box" data-role="provisioning" hidden>
    <div>Waiting for a technician to approve this device. Verification code:</div>
    <div class="code" data-role="code"></div>
    <div class="muted">expires in <span data-role="expiry"></span></div>
  </div>
  <p class="error" data-role="error" hidden></p>
  <dl class="facts">
    <dt>Device ID</dt><dd><code data-role="device-id">—</code></dd>
    <dt>Workspace</dt><dd><code data-role="workspace-id">—</code></dd>
    <dt>Database</dt><dd><code data-role="database"></code></dd>
  </dl>
  <div class="section">
    <h3>Sensor</h3>
    <div class="row">
      <label class="switch"><input type="checkbox" data-role="sensor-on"> running</label>
      <label class="switch">every <input type="number" class="small" data-role="interval" min="${MIN_INTERVAL_MS}" step="100"> ms</label>
      <span class="muted" data-role="rate"></span>
    </div>
    <div class="muted mono" data-role="reading">no reading yet</div>
  </div>
  <div class="section">
    <h3>Send</h3>
    <div class="row">
      <input data-role="text" value="hello" size="14" title="text sent in each message">
      <label class="switch">× <input type="number" class="small" data-role="burst" min="1" max="10000" value="1"></label>
      <button class="primary" data-role="send">Send</button>
      <label class="switch"><input type="checkbox" data-role="offline"> go offline</label>
    </div>
  </div>
  <div class="section">
    <h3>Queue</h3>
    <div><strong data-role="pending">0</strong> pending <span class="muted" data-role="pending-bytes"></span>
      · <span data-role="delivered">0</span> delivered · <span data-role="rejected">0</span> rejected</div>
    <div class="progress done" data-role="progress"><div style="width:100%"></div></div>
    <div class="muted" data-role="progress-text">nothing to send</div>
    <ul class="outcomes" data-role="outcomes"></ul>
  </div>
  <div class="section">
    <h3>Last minute <span class="muted">sensor readings and pending messages</span></h3>
    <div class="chart-box" data-role="chart"></div>
  </div>
  <div class="section">
    <h3>Desired properties <span class="muted" data-role="desired-version"></span></h3>
    <pre class="mono" data-role="desired">{}</pre>
  </div>
  <div class="section">
    <h3>Reported properties <span class="muted">(edit, then Report)</span></h3>
    <textarea data-role="reported" placeholder='{"firmware": "demo-1.0"}'></textarea>
    <div class="row"><button data-role="report">Report</button><span class="muted" data-role="report-note"></span></div>
  </div>
  <div class="row"><button data-role="stop">Stop this device</button></div>
`;

/** Per-device values that outlive a reload (the SDK keeps identity and queue in IndexedDB). */
function loadDeviceState(deviceId) {
  try {
    return JSON.parse(localStorage.getItem(`vdev-demo-device:${deviceId}`)) ?? {};
  } catch {
    return {};
  }
}

export class DevicePanel {
  /** @param {{instance: string, provisioningToken: string, deviceId: string, onStopped: () => void}} options */
  constructor(options) {
    this.options = options;
    this.database = `vdev-demo:${options.deviceId}`;
    this.saved = { counters: {}, sensorOn: false, intervalMs: DEFAULT_INTERVAL_MS, reported: {}, ...loadDeviceState(options.deviceId) };
    this.client = null;
    this.sentBySequence = new Map();
    this.delivered = 0;
    this.rejected = 0;
    this.peakPending = 0;
    this.timers = [];
    this.chart = new DeviceChart();
    this.renderScheduled = false;
    this.onQueueEvent = () => this.scheduleRender();
    this.element = document.createElement("article");
    this.element.className = "card device";
    this.element.dataset.deviceId = options.deviceId;
    this.element.innerHTML = TEMPLATE;
    this.$("title").textContent = options.deviceId;
    this.$("database").textContent = this.database;
    this.$("interval").value = String(this.saved.intervalMs);
    this.$("sensor-on").checked = this.saved.sensorOn;
    this.$("reported").value = JSON.stringify(this.saved.reported, null, 1);
    this.$("chart").append(this.chart.element);
    this.setControlsEnabled(false);
    this.renderRate();
    this.wire();
  }

  $(role) {
    return this.element.querySelector(`[data-role="${role}"]`);
  }

  save() {
    localStorage.setItem(`vdev-demo-device:${this.options.deviceId}`, JSON.stringify(this.saved));
  }

  wire() {
    this.$("send").addEventListener("click", () => this.sendBurst());
    this.$("offline").addEventListener("change", (e) => this.setOffline(e.target.checked));
    this.$("sensor-on").addEventListener("change", (e) => {
      this.saved.sensorOn = e.target.checked;
      this.save();
      this.restartSensor();
    });
    this.$("interval").addEventListener("change", (e) => {
      const ms = Number(e.target.value);
      if (this.applyInterval(ms)) this.report({ [RATE_PROPERTY]: this.saved.intervalMs });
    });
    this.$("report").addEventListener("click", () => this.reportFromEditor());
    this.$("stop").addEventListener("click", () => this.stop().then(() => this.options.onStopped()));
  }

  setControlsEnabled(enabled) {
    for (const role of ["send", "offline", "report", "sensor-on", "interval", "stop"]) this.$(role).disabled = !enabled;
  }

  showError(text) {
    const error = this.$("error");
    error.textContent = text;
    error.hidden = !text;
  }

  async start() {
    const { instance, provisioningToken, deviceId } = this.options;
    try {
      this.client = await DeviceClient.start({
        instance,
        provisioningToken,
        deviceId,
        database: this.database,
        provisioningParameters: { app: "vdev demo" },
        onProvisioningOperation: (operation) => this.showProvisioning(operation),
        onProvisioningFailed: (error) => {
          this.hideProvisioning();
          this.showError(`provisioning failed: ${error.message}`);
        },
        onConnectionStateChanged: (state) => this.renderState(state),
        onDesiredPropertiesChanged: (properties, version) => this.applyDesired(properties, version),
        onMessageOutcome: (outcome) => this.recordOutcome(outcome),
        // Also the browser's own offline/online events: the switch shows what the device does.
        onOfflineChanged: (offline) => {
          this.$("offline").checked = offline;
          if (this.client) this.renderState(this.client.statistics().connectionState);
        },
      });
    } catch (e) {
      this.renderState("failed");
      this.showError(String(e.message ?? e));
      return;
    }
    this.setControlsEnabled(true);
    this.renderState(this.client.statistics().connectionState);
    const desired = this.client.desiredProperties();
    if (desired.version !== null) this.applyDesired(desired.properties, desired.version);
    // The queue's figures change with the client's events: each schedules one render for the
    // next animation frame, however many come in between (a drain of thousands of messages
    // draws at the screen's rate, not per message).
    for (const kind of QUEUE_EVENTS) this.client.addEventListener(kind, this.onQueueEvent);
    this.timers.push(setInterval(() => this.scheduleRender(), CLOCK_TICK_MS));
    this.renderQueue();
    this.restartSensor();
  }

  async stop() {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    clearInterval(this.sensorTimer);
    clearInterval(this.expiryTimer);
    this.setControlsEnabled(false);
    const client = this.client;
    this.client = null;
    for (const kind of QUEUE_EVENTS) client?.removeEventListener(kind, this.onQueueEvent);
    if (client) await client.stop();
    this.renderState("stopped");
  }

  showProvisioning(operation) {
    this.$("provisioning").hidden = false;
    this.$("code").textContent = operation.verificationCode;
    const tick = () => {
      const seconds = Math.max(0, Math.round((operation.expiresAt - Date.now()) / 1000));
      this.$("expiry").textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
    };
    tick();
    clearInterval(this.expiryTimer);
    this.expiryTimer = setInterval(tick, 1000);
  }

  hideProvisioning() {
    this.$("provisioning").hidden = true;
    clearInterval(this.expiryTimer);
  }

  renderState(state) {
    const offline = this.client?.statistics().offline ?? this.$("offline").checked;
    const pill = this.$("state");
    const shown = offline && state !== "connected" && state !== "stopped" ? "offline" : state;
    pill.textContent = shown;
    pill.className = `pill ${shown}`;
    if (state !== "provisioning" && state !== "failed" && this.client?.deviceId) this.hideProvisioning();
    if (state === "connected") this.showError("");
    this.renderIdentity();
  }

  renderIdentity() {
    if (!this.client) return;
    this.$("device-id").textContent = this.client.deviceId ?? "—";
    this.$("workspace-id").textContent = this.client.workspaceId ?? "—";
  }

  async setOffline(offline) {
    if (!this.client) return;
    if (typeof this.client.setOffline !== "function") {
      this.showError("this vdev-web build has no setOffline()");
      this.$("offline").checked = false;
      return;
    }
    this.client.setOffline(offline);
    this.renderState(this.client.statistics().connectionState);
  }

  async send(stream, body) {
    const sender = this.senders?.[stream.stream] ?? this.client.createStreamSender(stream);
    this.senders = { ...this.senders, [stream.stream]: sender };
    // Each stream numbers its messages 1, 2, 3, ... so gaps and reorderings show at the Platform.
    const n = (this.saved.counters[stream.stream] ?? 0) + 1;
    this.saved.counters[stream.stream] = n;
    const sequencePromise = sender.sendMessage(JSON.stringify({ n, ...body }));
    this.save();
    const sequence = await sequencePromise;
    this.sentBySequence.set(sequence, `${stream.stream} #${n}`);
    return sequence;
  }

  async sendBurst() {
    if (!this.client) return;
    const count = Math.max(1, Math.min(10_000, Number(this.$("burst").value) || 1));
    const text = this.$("text").value;
    const button = this.$("send");
    button.disabled = true;
    try {
      // Sent together, they are stored in few IndexedDB transactions; each resolves once stored.
      const sends = [];
      for (let i = 0; i < count; i += 1) sends.push(this.send(MANUAL_STREAM, { text }));
      await Promise.all(sends);
      this.showError("");
    } catch (e) {
      this.showError(String(e.message ?? e));
    } finally {
      button.disabled = false;
      this.scheduleRender();
    }
  }

  restartSensor() {
    clearInterval(this.sensorTimer);
    this.renderRate();
    if (!this.client || !this.saved.sensorOn) return;
    this.sensorTimer = setInterval(() => {
      const reading = { temperature: Number((21 + 3 * Math.sin(Date.now() / 60000) + Math.random() * 0.4).toFixed(2)), humidity: Math.round(40 + Math.random() * 5) };
      this.$("reading").textContent = `${new Date().toLocaleTimeString()} ${JSON.stringify(reading)}`;
      const now = Date.now();
      this.chart.temperature.add(now, reading.temperature);
      this.chart.humidity.add(now, reading.humidity);
      this.scheduleRender();
      this.send(SENSOR_STREAM, reading).catch((e) => this.showError(String(e.message ?? e)));
    }, this.saved.intervalMs);
  }

  renderRate() {
    const hz = 1000 / this.saved.intervalMs;
    this.$("rate").textContent = `${hz >= 1 ? hz.toFixed(hz % 1 ? 1 : 0) : hz.toFixed(2)} Hz${this.saved.sensorOn ? "" : " (stopped)"}`;
    this.$("rate").dataset.intervalMs = String(this.saved.intervalMs);
  }

  applyInterval(ms) {
    if (!Number.isFinite(ms) || ms < MIN_INTERVAL_MS || ms > MAX_INTERVAL_MS) {
      this.showError(`${RATE_PROPERTY} must be between ${MIN_INTERVAL_MS} and ${MAX_INTERVAL_MS} ms`);
      return false;
    }
    this.saved.intervalMs = Math.round(ms);
    this.$("interval").value = String(this.saved.intervalMs);
    this.save();
    this.restartSensor();
    return true;
  }

  applyDesired(properties, version) {
    this.$("desired").textContent = JSON.stringify(properties, null, 1);
    this.$("desired-version").textContent = `version ${version}`;
    const wanted = properties[RATE_PROPERTY];
    if (typeof wanted === "number" && wanted !== this.saved.reported[RATE_PROPERTY] && this.applyInterval(wanted)) {
      this.report({ [RATE_PROPERTY]: this.saved.intervalMs });
    }
  }

  async report(patch) {
    if (!this.client) return;
    try {
      await this.client.updateReportedProperties(patch);
      for (const [key, value] of Object.entries(patch)) {
        if (value === null) delete this.saved.reported[key];
        else this.saved.reported[key] = value;
      }
      this.save();
      this.$("reported").value = JSON.stringify(this.saved.reported, null, 1);
      this.$("report-note").textContent = `saved ${new Date().toLocaleTimeString()}; sent when connected`;
    } catch (e) {
      this.showError(String(e.message ?? e));
    }
  }

  reportFromEditor() {
    let wanted;
    try {
      wanted = JSON.parse(this.$("reported").value || "{}");
    } catch (e) {
      this.showError(`reported properties: ${e.message}`);
      return;
    }
    if (typeof wanted !== "object" || wanted === null || Array.isArray(wanted)) {
      this.showError("reported properties: a JSON object is needed");
      return;
    }
    // A merge patch: keys removed in the editor are deleted with null.
    const patch = { ...wanted };
    for (const key of Object.keys(this.saved.reported)) if (!(key in wanted)) patch[key] = null;
    this.report(patch);
  }

  recordOutcome(outcome) {
    if (outcome.status === "delivered") this.delivered += 1;
    else this.rejected += 1;
    const item = document.createElement("li");
    const label = this.sentBySequence.get(outcome.sequence) ?? "earlier message";
    this.sentBySequence.delete(outcome.sequence);
    item.innerHTML = `<span class="mono"></span><span class="${outcome.status}"></span>`;
    item.firstChild.textContent = `seq ${outcome.sequence} · ${label}`;
    item.lastChild.textContent = outcome.status === "delivered" ? "delivered" : `rejected: ${outcome.reason.message}`;
    const list = this.$("outcomes");
    list.prepend(item);
    while (list.children.length > OUTCOMES_SHOWN) list.lastChild.remove();
    this.scheduleRender();
  }

  /** One render on the next animation frame, for any number of calls before it. */
  scheduleRender() {
    if (this.renderScheduled) return;
    this.renderScheduled = true;
    const run = () => {
      cancelAnimationFrame(frame);
      clearTimeout(fallback);
      this.renderScheduled = false;
      this.renderQueue();
    };
    const frame = requestAnimationFrame(run);
    const fallback = setTimeout(run, RENDER_FALLBACK_MS);
  }

  renderQueue() {
    if (!this.client) return;
    const stats = this.client.statistics();
    const pending = stats.pendingCount;
    const now = Date.now();
    this.chart.queue.add(now, pending);
    this.chart.render(now);
    this.peakPending = pending === 0 ? 0 : Math.max(this.peakPending, pending);
    this.$("pending").textContent = String(pending);
    this.$("pending-bytes").textContent = pending ? `(${stats.pendingBytes} bytes)` : "";
    this.$("delivered").textContent = String(this.delivered);
    this.$("rejected").textContent = String(this.rejected);
    const progress = this.$("progress");
    const done = pending === 0;
    const fraction = done ? 1 : (this.peakPending - pending) / this.peakPending;
    progress.firstElementChild.style.width = `${Math.round(fraction * 100)}%`;
    progress.classList.toggle("done", done);
    progress.dataset.pending = String(pending);
    this.$("progress-text").textContent = done
      ? "all stored messages delivered"
      : `draining: ${this.peakPending - pending} of ${this.peakPending} sent${stats.offline ? " (offline: kept in IndexedDB)" : ""}`;
    const shown = stats.offline && stats.connectionState !== "connected" && stats.connectionState !== "stopped" ? "offline" : stats.connectionState;
    if (this.$("state").textContent !== shown) this.renderState(stats.connectionState);
  }
}
