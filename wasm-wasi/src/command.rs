//! The `command` world: a ready virtual device for `wasmtime run`. It reads its options from
//! arguments and `VDEV_*` environment variables ([`CommandOptions`]), sends one message per line
//! of standard input or simulated sensor readings, prints every event as a JSON line on standard
//! output (`{"event":"stored","seq":..}` once a message is durable), and exits 0 once its input
//! is done and every stored message was delivered (unless `--exit-when-delivered false`).
//! `--reported-properties <json object>` is merged into the reported properties at start; desired
//! properties are printed as `desired-properties-changed` events as they change. Events at or
//! above `--log-level` (`error`, `warn`, `info`, `debug` or `off`; `error` by default) are also
//! written to standard error with their level, as a log.

use std::io::Write;

use serde_json::json;
use vdev_core::{Event, LogLevel, MessageOptions, SendError, StreamOptions};
use wasip2::io::streams::StreamError;

use crate::driver::{Driver, StoreFailure, now_ms};
use crate::notice::Notice;
use crate::settings::{CommandOptions, Source};

/// Longest single wait of the loop; the core's own deadlines are usually sooner.
const MAX_WAIT_MS: u64 = 1_000;

fn print(line: serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Writes the event's line to standard error too when `most_detailed` (`--log-level`) admits
/// its level: `vdev-device: <level>: <line>`.
fn log(notice: &Notice, line: &serde_json::Value, most_detailed: Option<LogLevel>) {
    let Notice::Core(event) = notice;
    let level = event.level();
    if most_detailed.is_some_and(|most| level.within(most)) {
        eprintln!("vdev-device: {}: {line}", level.name());
    }
}

/// Runs the device; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let options = match CommandOptions::parse(&args, &env) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("vdev-device: {error}");
            return 2;
        }
    };
    let mut driver = match Driver::start(&options.settings) {
        Ok(driver) => driver,
        Err(error) => {
            eprintln!("vdev-device: {error}");
            return 1;
        }
    };
    if let Some(patch) = options.reported_properties.clone()
        && let Err(error) = driver.update_reported_properties(patch)
    {
        eprintln!("vdev-device: reported-properties: {error}");
        return 2;
    }
    let stream = StreamOptions {
        stream_group: options.stream_group.clone(),
        stream: options.stream.clone(),
        ..Default::default()
    };
    let mut input = Input::new(options.source);
    loop {
        let mut failed = false;
        for notice in driver.take_notices() {
            if let Notice::Core(Event::ProvisioningFailed(_)) = &notice {
                failed = true;
            }
            let line = notice.to_json();
            log(&notice, &line, options.log_level);
            print(line);
        }
        if failed {
            return 1;
        }
        if input.done && options.exit_when_delivered && driver.device().stats().pending_count == 0 {
            driver.stop();
            print(json!({ "event": "done" }));
            return 0;
        }
        let max_wait = input.wait_ms().unwrap_or(MAX_WAIT_MS).min(MAX_WAIT_MS);
        let extra: Vec<&wasip2::io::poll::Pollable> = input.stdin_ready.iter().collect();
        let ready = driver.turn(max_wait, &extra);
        for payload in input.take_messages(!ready.is_empty()) {
            match driver.send(&stream, &MessageOptions::default(), payload) {
                Ok(seq) => print(json!({ "event": "stored", "seq": seq })),
                Err(error) => {
                    print(json!({ "event": "not-stored", "error": error.to_string() }));
                    if error == StoreFailure::Refused(SendError::Stopped) {
                        return 1;
                    }
                }
            }
        }
    }
}

/// Where messages come from: stdin lines or sensor readings.
struct Input {
    source: Source,
    // Field order is drop order: the pollable before its stream.
    stdin_ready: Option<wasip2::io::poll::Pollable>,
    stdin: Option<wasip2::io::streams::InputStream>,
    partial: Vec<u8>,
    readings: u64,
    next_reading_at: u64,
    done: bool,
}

impl Input {
    fn new(source: Source) -> Self {
        let (stdin_ready, stdin) = match source {
            Source::Stdin => {
                let stdin = wasip2::cli::stdin::get_stdin();
                (Some(stdin.subscribe()), Some(stdin))
            }
            Source::Sensor { .. } => (None, None),
        };
        Self {
            source,
            stdin_ready,
            stdin,
            partial: Vec::new(),
            readings: 0,
            next_reading_at: now_ms(),
            done: false,
        }
    }

    /// How long until the next sensor reading is due.
    fn wait_ms(&self) -> Option<u64> {
        match self.source {
            Source::Sensor { .. } if !self.done => {
                Some(self.next_reading_at.saturating_sub(now_ms()))
            }
            _ => None,
        }
    }

    /// The messages available now.
    fn take_messages(&mut self, stdin_ready: bool) -> Vec<Vec<u8>> {
        match self.source {
            Source::Stdin if stdin_ready => self.read_lines(),
            Source::Stdin => Vec::new(),
            Source::Sensor { interval_ms, count } => {
                let mut out = Vec::new();
                while !self.done && now_ms() >= self.next_reading_at {
                    // A slow sine around 21 °C: plausible, deterministic readings.
                    let temperature = 21.0 + 3.0 * (self.readings as f64 / 10.0).sin();
                    out.push(
                        json!({ "n": self.readings, "temperature": (temperature * 100.0).round() / 100.0 })
                            .to_string()
                            .into_bytes(),
                    );
                    self.readings += 1;
                    self.next_reading_at += interval_ms;
                    self.done = count != 0 && self.readings >= count;
                }
                out
            }
        }
    }

    fn read_lines(&mut self) -> Vec<Vec<u8>> {
        let Some(stdin) = &self.stdin else {
            return Vec::new();
        };
        match stdin.read(64 * 1024) {
            Ok(bytes) => self.partial.extend_from_slice(&bytes),
            Err(StreamError::Closed) | Err(StreamError::LastOperationFailed(_)) => {
                self.done = true;
                self.stdin_ready = None;
                self.stdin = None;
            }
        }
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.partial.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                lines.push(line);
            }
        }
        if self.done && !self.partial.is_empty() {
            lines.push(std::mem::take(&mut self.partial));
        }
        lines
    }
}
