// A live chart of one device in plain SVG (no charting library: three polylines over a minute
// need none, and the page stays free of another dependency): its sensor's temperature and
// humidity and its queue's pending messages, each in a strip of its own, on one time axis.

const SVG_NS = "http://www.w3.org/2000/svg";
/** How much history the chart shows. */
export const WINDOW_MS = 60_000;
/** One value kept per series per bucket (the queue's highest and last): a burst of thousands of
 * events keeps 240 buckets a series, drawn as at most a few points each. */
const BUCKET_MS = 250;

const WIDTH = 480;
const STRIP_HEIGHT = 54;
const STRIP_GAP = 16;
const LABEL_HEIGHT = 13;

/**
 * Values of one quantity over the last WINDOW_MS, one bucket per BUCKET_MS holding the bucket's
 * highest and its last value: a queue that rose and fell within one bucket still shows its peak.
 */
export class Series {
  constructor() {
    this.buckets = [];
  }

  add(t, value) {
    const key = Math.floor(t / BUCKET_MS);
    const last = this.buckets.at(-1);
    if (last?.key === key) {
      last.max = Math.max(last.max, value);
      last.last = value;
    } else {
      this.buckets.push({ key, t, max: value, last: value });
    }
    this.trim(t);
  }

  trim(now) {
    while (this.buckets.length > 1 && this.buckets[0].t < now - WINDOW_MS) this.buckets.shift();
  }

  get last() {
    return this.buckets.at(-1)?.last;
  }

  /** The values in order with repeats collapsed ("0 100 37 0 50 0"): what the line went through. */
  trace() {
    const values = [];
    for (const { max, last } of this.buckets) {
      for (const value of [max, last]) if (values.at(-1) !== value) values.push(value);
    }
    return values;
  }
}

function svg(name, attributes = {}) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

const format = (value, unit) => (value === undefined ? "—" : `${Number.isInteger(value) ? value : value.toFixed(1)}${unit}`);

export class DeviceChart {
  constructor() {
    this.temperature = new Series();
    this.humidity = new Series();
    this.queue = new Series();
    this.strips = [
      { key: "temperature", series: this.temperature, label: "temperature", unit: " °C", step: false },
      { key: "humidity", series: this.humidity, label: "humidity", unit: " %", step: false },
      { key: "queue", series: this.queue, label: "pending messages", unit: "", step: true, fromZero: true },
    ];
    const height = this.strips.length * (STRIP_HEIGHT + LABEL_HEIGHT + STRIP_GAP);
    this.element = svg("svg", { viewBox: `0 0 ${WIDTH} ${height}`, class: "chart", role: "img", "aria-label": "sensor readings and pending messages over the last minute" });
    this.strips.forEach((strip, i) => {
      const top = i * (STRIP_HEIGHT + LABEL_HEIGHT + STRIP_GAP) + LABEL_HEIGHT;
      strip.top = top;
      this.element.append(svg("rect", { x: 0, y: top, width: WIDTH, height: STRIP_HEIGHT, class: "strip" }));
      strip.title = svg("text", { x: 2, y: top - 3, class: "label" });
      strip.range = svg("text", { x: WIDTH - 2, y: top - 3, class: "label", "text-anchor": "end" });
      strip.line = svg("polyline", { class: `line ${strip.key}`, "data-series": strip.key, points: "" });
      this.element.append(strip.title, strip.range, strip.line);
    });
    const axis = svg("text", { x: 2, y: height - 3, class: "label" });
    axis.textContent = `−${WINDOW_MS / 1000} s`;
    const now = svg("text", { x: WIDTH - 2, y: height - 3, class: "label", "text-anchor": "end" });
    now.textContent = "now";
    this.element.append(axis, now);
  }

  /** Redraws every strip for a window ending `now`. */
  render(now) {
    const x = (t) => (((t - (now - WINDOW_MS)) / WINDOW_MS) * WIDTH).toFixed(1);
    for (const strip of this.strips) {
      const { series, top } = strip;
      series.trim(now);
      const buckets = series.buckets.filter((b) => b.t >= now - WINDOW_MS);
      const values = buckets.flatMap((b) => [b.max, b.last]);
      let low = strip.fromZero ? 0 : Math.min(...values);
      let high = Math.max(...values);
      if (!values.length) [low, high] = [0, 1];
      if (high - low < (strip.fromZero ? 1 : 0.5)) high = low + (strip.fromZero ? 1 : 0.5);
      const y = (value) => (top + STRIP_HEIGHT - 2 - ((value - low) / (high - low)) * (STRIP_HEIGHT - 4)).toFixed(1);
      const points = [];
      buckets.forEach((b, i) => {
        // A step line for the queue (a count holds until the next change), with the bucket's
        // peak drawn as a spike; straight segments between readings.
        if (strip.step && i > 0) points.push(`${x(b.t)},${y(buckets[i - 1].last)}`);
        if (strip.step && b.max !== b.last) points.push(`${x(b.t)},${y(b.max)}`);
        points.push(`${x(b.t)},${y(b.last)}`);
      });
      if (strip.step && buckets.length) points.push(`${x(now)},${y(buckets.at(-1).last)}`);
      strip.line.setAttribute("points", points.join(" "));
      strip.title.textContent = `${strip.label}: ${format(series.last, strip.unit)}`;
      strip.range.textContent = values.length ? `${format(strip.fromZero ? Math.max(...values) : low, strip.unit)}${strip.fromZero ? " peak" : ` – ${format(high, strip.unit)}`}` : "";
    }
    // What the chart shows, for tests and tools: points per series, the last and highest queue
    // sizes, and the queue's trace.
    const data = this.element.dataset;
    data.readingPoints = String(this.temperature.buckets.length);
    data.temperatureLast = String(this.temperature.last ?? "");
    data.queuePoints = String(this.queue.buckets.length);
    data.queueLast = String(this.queue.last ?? "");
    data.queuePeak = String(Math.max(0, ...this.queue.buckets.map((b) => b.max)));
    data.queueTrace = this.queue.trace().join(" ");
  }
}
