// The part of Playwright's page API that the end-to-end tests use, over W3C WebDriver, so that the
// same tests drive Debian's Firefox ESR (geckodriver) and WebKitGTK (WebKitWebDriver), which
// Playwright cannot: it drives only its own builds of those engines, and those are downloads.
//
// Why by hand: the tests are written against Playwright's locators (`locator(css, { hasText })`,
// `filter`, `and`, `waitFor`, auto-waiting actions); the WebDriver clients on npm offer other
// APIs, so using one would mean a second copy of every test. The transport is a few `fetch`
// calls; what is here is the mapping. Locators resolve inside the page in one script per poll;
// actions go through WebDriver's element commands (click, clear, send keys), which check that a
// person could do them (the element is shown and not covered).
//
// Uncaught errors of a page ("pageerror") are collected by listeners installed after each
// navigation, so an error thrown while the page loads, before `goto` returns, is not seen (classic
// WebDriver has no script that runs before the page's own).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";
const DEFAULT_TIMEOUT_MS = 30_000;
const POLL_MS = 50;
const COMMAND_TIMEOUT_MS = 60_000;

/** The engines this module drives, with their drivers and the capabilities of a new session. */
// Each engine trusts a test certificate and maps host names to loopback in its own way (`tls`:
// names, ip, certificate, ca, from lib.mjs's tlsOf):
// - Firefox: the CA in its profile's certificate store (certutil) and network.dns.localDomains,
//   which resolves the names to loopback (so the Platform listens on 127.0.0.1);
// - WebKit: the certificate allowed for the names (webkitgtk:browserOptions.certificates) and a
//   CONNECT proxy in https_proxy that sends the names to `ip`, both from
//   wasm-web/scripts/webkit_driver.py, which the strict browser suite uses too.
const ENGINES = {
  firefox: {
    driver: () => process.env.GECKODRIVER ?? "geckodriver",
    capabilities: (tls) => {
      const prefs = {
        // Firefox asks the user before it grants persistent storage: answer yes, as a user would.
        "dom.storageManager.prompt.testing": true,
        "dom.storageManager.prompt.testing.allow": true,
      };
      const args = ["-headless"];
      if (tls) {
        if (!tls.ip.startsWith("127.0.0.1")) throw new Error("Firefox maps names to 127.0.0.1 only");
        const profile = mkdtempSync(path.join(tmpdir(), "vdev-e2e-firefox-"));
        for (const command of [
          ["-N", "-d", `sql:${profile}`, "--empty-password"],
          ["-A", "-d", `sql:${profile}`, "-n", "vdev-platform test CA", "-t", "C,,", "-i", tls.ca],
        ]) {
          const run = spawnSync("certutil", command, { encoding: "utf8" });
          if (run.status !== 0) throw new Error(`certutil ${command.join(" ")}: ${run.stderr}`);
        }
        args.push("-profile", profile);
        prefs["network.dns.localDomains"] = tls.names.join(",");
      }
      return {
        browserName: "firefox",
        "moz:firefoxOptions": { binary: process.env.FIREFOX ?? "/usr/bin/firefox-esr", args, prefs },
      };
    },
    version: (capabilities) => capabilities.browserVersion,
    fullPageScreenshot: "/moz/screenshot/full",
  },
  webkit: {
    driver: () => process.env.WEBKITWEBDRIVER ?? "WebKitWebDriver",
    capabilities: () => ({}),
    // With `tls`, the browser suites' wasm-web/scripts/webkit_driver.py stands in front of the
    // driver: it adds the certificate capability to each session and is the CONNECT proxy.
    tlsDriver: (tls, urlFile) => [
      "python3",
      [path.join(here, "..", "..", "wasm-web", "scripts", "webkit_driver.py"), urlFile, tls.certificate, tls.ip, ...tls.names],
    ],
    version: (capabilities) => capabilities.browserVersion,
    fullPageScreenshot: null,
  },
};

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts `engine`'s WebDriver server; resolves with an object shaped like Playwright's Browser.
 * With `tls`, its sessions reach a Platform at host names over TLS (see ENGINES).
 */
export async function launchWebDriverBrowser(engine, { tls } = {}) {
  const spec = ENGINES[engine];
  if (!spec) throw new Error(`no WebDriver engine "${engine}" (known: ${Object.keys(ENGINES).join(", ")})`);
  const port = await freePort();
  const behind = Boolean(tls && spec.tlsDriver);
  const urlFile = path.join(mkdtempSync(path.join(tmpdir(), "vdev-e2e-driver-")), "driver.url");
  const [command, args] = behind ? spec.tlsDriver(tls, urlFile) : [spec.driver(), [`--port=${port}`]];
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (chunk) => (log += chunk));
  child.stderr.on("data", (chunk) => (log += chunk));
  const exited = new Promise((resolve) => child.once("exit", resolve));
  // webkit_driver.py names its URL in urlFile once it listens.
  const where = () => (!behind ? `http://127.0.0.1:${port}` : existsSync(urlFile) ? readFileSync(urlFile, "utf8") : null);
  let base;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${command} exited (${child.exitCode}):\n${log}`);
    base = where();
    const ready = base !== null && (await fetch(`${base}/status`).then((r) => r.ok, () => false));
    if (ready) break;
    if (Date.now() > deadline) throw new Error(`${command} did not answer within 30 s:\n${log}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const browser = new WebDriverBrowser(engine, spec, base, child, exited);
  browser.tls = tls;
  return browser;
}

class WebDriverError extends Error {}

async function call(base, method, route, body) {
  const response = await fetch(`${base}${route}`, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    // No command of these tests takes long; a driver that stops answering fails the test soon.
    signal: AbortSignal.timeout(COMMAND_TIMEOUT_MS),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const { error, message } = answer.value ?? {};
    throw new WebDriverError(`${method} ${route}: ${response.status} ${error ?? ""} ${message ?? ""}`.trim());
  }
  return answer.value;
}

class WebDriverBrowser {
  constructor(engine, spec, base, child, exited) {
    this.engine = engine;
    this.spec = spec;
    this.base = base;
    this.child = child;
    this.exited = exited;
    this.contexts = new Set();
  }

  /** A new session: its own profile, so its own storage (as Playwright's contexts are). */
  async newContext({ viewport } = {}) {
    // The drivers run one session at a time: one a failed test left open is closed first.
    for (const open of this.contexts) await open.close().catch(() => {});
    const answer = await call(this.base, "POST", "/session", {
      capabilities: { alwaysMatch: this.spec.capabilities(this.tls) },
    });
    const context = new Context(this, answer.sessionId, answer.capabilities);
    this.contexts.add(context);
    context.viewport = viewport;
    return context;
  }

  async newPage() {
    const context = await this.newContext();
    const page = await context.newPage();
    page.ownsContext = true;
    return page;
  }

  /** The engine's version, from a session's capabilities. */
  async version() {
    const context = await this.newContext();
    try {
      return this.spec.version(context.capabilities);
    } finally {
      await context.close();
    }
  }

  async close() {
    for (const context of this.contexts) await context.close().catch(() => {});
    this.child.kill("SIGTERM");
    await this.exited;
  }
}

class Context {
  constructor(browser, sessionId, capabilities) {
    this.browser = browser;
    this.session = `/session/${sessionId}`;
    this.capabilities = capabilities;
    this.pages = [];
    this.current = null;
    this.closed = false;
  }

  call(method, route, body) {
    return call(this.browser.base, method, `${this.session}${route}`, body);
  }

  async newPage() {
    let handle;
    if (this.pages.length === 0) {
      handle = await this.call("GET", "/window");
    } else {
      // A window, not a tab: WebKitGTK does not render a tab in the background, and a
      // screenshot of one never returns.
      handle = (await this.call("POST", "/window/new", { type: "window" })).handle;
    }
    const page = new Page(this, handle);
    this.pages.push(page);
    await page.focus();
    if (this.viewport) {
      await this.call("POST", "/window/rect", { width: this.viewport.width, height: this.viewport.height }).catch(() => {});
    }
    return page;
  }

  async switchTo(handle) {
    if (this.current === handle) return;
    await this.call("POST", "/window", { handle });
    this.current = handle;
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    this.browser.contexts.delete(this);
    await call(this.browser.base, "DELETE", this.session);
  }
}

// Runs in the page: installs the error listeners if missing, runs `body`, and returns its result
// with the errors collected since the last call.
const PAGE_PRELUDE = `
  if (!window.__vdevE2eErrors) {
    window.__vdevE2eErrors = [];
    window.addEventListener("error", (e) => window.__vdevE2eErrors.push(e.message));
    window.addEventListener("unhandledrejection", (e) => window.__vdevE2eErrors.push(String(e.reason?.message ?? e.reason)));
  }
`;

// Runs in the page: the elements a locator chain picks, and whether each is visible.
const RESOLVE = `
  const normalise = (text) => (text ?? "").replace(/\\s+/g, " ").trim();
  const matches = (element, hasText) => {
    if (hasText === undefined) return true;
    const text = normalise(element.textContent);
    return hasText.regex
      ? new RegExp(hasText.regex, hasText.flags).test(text)
      : text.toLowerCase().includes(normalise(hasText.text).toLowerCase());
  };
  const resolve = (chain) => {
    let found = [document];
    for (const step of chain) {
      if (step.css !== undefined) {
        const next = new Set();
        for (const root of found) for (const element of root.querySelectorAll(step.css)) next.add(element);
        found = [...next];
      }
      if (step.and !== undefined) {
        const other = new Set(resolve(step.and));
        found = found.filter((element) => other.has(element));
      }
      found = found.filter((element) => matches(element, step.hasText));
    }
    return found;
  };
  const visible = (element) =>
    element.getClientRects().length > 0 && getComputedStyle(element).visibility !== "hidden";
`;

function textMatcher(hasText) {
  if (hasText === undefined) return undefined;
  return hasText instanceof RegExp ? { regex: hasText.source, flags: hasText.flags } : { text: String(hasText) };
}

function describe(chain) {
  return chain
    .map((step) => {
      let part = step.css !== undefined ? step.css : "";
      if (step.and) part += `.and(${describe(step.and)})`;
      if (step.hasText) part += ` hasText=${step.hasText.regex ? `/${step.hasText.regex}/` : JSON.stringify(step.hasText.text)}`;
      return part.trim();
    })
    .join(" >> ");
}

class Page {
  constructor(context, handle) {
    this.context = context;
    this.handle = handle;
    this.listeners = { pageerror: [] };
  }

  on(event, listener) {
    if (!this.listeners[event]) throw new Error(`the WebDriver pages report only: ${Object.keys(this.listeners).join(", ")}`);
    this.listeners[event].push(listener);
  }

  async focus() {
    await this.context.switchTo(this.handle);
  }

  /**
   * Runs `body` (a function body using `args`) in the page, or, as Playwright's `evaluate` does,
   * a function with one argument; hands on the page's new errors.
   */
  async evaluate(body, args) {
    if (typeof body === "function") return this.evaluate(`return (${body.toString()})(args[0]);`, [args ?? null]);
    await this.focus();
    const script = `const args = arguments;
      ${PAGE_PRELUDE}
      const result = (() => { ${body} })();
      return { result, errors: window.__vdevE2eErrors.splice(0) };`;
    const { result, errors } = await this.context.call("POST", "/execute/sync", { script, args: args ?? [] });
    for (const message of errors) for (const listener of this.listeners.pageerror) listener(new Error(message));
    return result;
  }

  async goto(url) {
    await this.focus();
    await this.context.call("POST", "/url", { url });
    await this.evaluate("return null;");
  }

  async reload() {
    await this.focus();
    await this.context.call("POST", "/refresh", {});
    await this.evaluate("return null;");
  }

  /** Polls `fn(arg)` in the page until it is truthy. */
  async waitForFunction(fn, arg, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const value = await this.evaluate(`return (${fn.toString()})(args[0]);`, [arg ?? null]);
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${fn.toString()}`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  locator(css, options = {}) {
    return new Locator(this, [{ css, hasText: textMatcher(options.hasText) }]);
  }

  inputValue(css) {
    return this.locator(css).inputValue();
  }

  click(css) {
    return this.locator(css).click();
  }

  fill(css, value) {
    return this.locator(css).fill(value);
  }

  textContent(css) {
    return this.locator(css).textContent();
  }

  async screenshot({ path, fullPage = false }) {
    await this.focus();
    const full = fullPage && this.context.browser.spec.fullPageScreenshot;
    const png = await this.context.call("GET", full || "/screenshot");
    writeFileSync(path, Buffer.from(png, "base64"));
  }

  async close() {
    if (this.ownsContext) return this.context.close();
    await this.focus();
    await this.context.call("DELETE", "/window");
    this.context.current = null;
  }
}

class Locator {
  constructor(page, chain) {
    this.page = page;
    this.chain = chain;
  }

  locator(css, options = {}) {
    return new Locator(this.page, [...this.chain, { css, hasText: textMatcher(options.hasText) }]);
  }

  filter({ hasText } = {}) {
    return new Locator(this.page, [...this.chain, { hasText: textMatcher(hasText) }]);
  }

  and(other) {
    return new Locator(this.page, [...this.chain, { and: other.chain }]);
  }

  /** What the chain finds now: `{ count, visible }` of every match, and the first match itself. */
  async probe() {
    return this.page.evaluate(
      `${RESOLVE}
       const found = resolve(args[0]);
       return { count: found.length, visible: found.map(visible), element: found[0] ?? null,
                text: found.length === 1 ? found[0].textContent : null,
                value: found.length === 1 ? found[0].value ?? null : null,
                checked: found.length === 1 ? found[0].checked ?? null : null };`,
      [this.chain],
    );
  }

  async waitFor({ state = "visible", timeout = DEFAULT_TIMEOUT_MS } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const { count, visible } = await this.probe();
      const done = {
        attached: count > 0,
        detached: count === 0,
        visible: visible.some(Boolean),
        hidden: !visible.some(Boolean),
      }[state];
      if (done === undefined) throw new Error(`waitFor: unknown state "${state}"`);
      if (done) return;
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeout} ms waiting for ${describe(this.chain)} to be ${state} (${count} found)`);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  /** Waits until exactly one element matches (and, for actions, is visible); Playwright's strictness. */
  async one({ visible: mustBeVisible = false, timeout = DEFAULT_TIMEOUT_MS } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const probe = await this.probe();
      if (probe.count > 1) throw new Error(`${describe(this.chain)} matches ${probe.count} elements, not one`);
      if (probe.count === 1 && (!mustBeVisible || probe.visible[0])) return probe;
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeout} ms waiting for one ${mustBeVisible ? "visible " : ""}${describe(this.chain)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  async count() {
    return (await this.probe()).count;
  }

  async isHidden() {
    const { visible } = await this.probe();
    return !visible.some(Boolean);
  }

  async textContent() {
    return (await this.one()).text;
  }

  async inputValue() {
    return (await this.one()).value;
  }

  async click() {
    const { element } = await this.one({ visible: true });
    await this.page.context.call("POST", `/element/${element[ELEMENT]}/click`, {});
  }

  async fill(value) {
    const { element } = await this.one({ visible: true });
    const id = element[ELEMENT];
    await this.page.context.call("POST", `/element/${id}/clear`, {});
    if (value !== "") await this.page.context.call("POST", `/element/${id}/value`, { text: String(value) });
  }

  async check() {
    const { element, checked } = await this.one({ visible: true });
    if (!checked) await this.page.context.call("POST", `/element/${element[ELEMENT]}/click`, {});
  }

  async uncheck() {
    const { element, checked } = await this.one({ visible: true });
    if (checked) await this.page.context.call("POST", `/element/${element[ELEMENT]}/click`, {});
  }

  /** A screenshot of the element alone. */
  async screenshot({ path }) {
    const { element } = await this.one({ visible: true });
    // Scrolled into view by the page first: WebKitWebDriver shoots only the part of the element
    // inside the viewport, and paints even that black, where the others scroll it in themselves.
    await this.page.evaluate("args[0].scrollIntoView({ block: 'center' }); return null;", [element]);
    const png = await this.page.context.call("GET", `/element/${element[ELEMENT]}/screenshot`);
    writeFileSync(path, Buffer.from(png, "base64"));
  }
}
