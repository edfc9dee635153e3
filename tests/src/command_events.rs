//! Reading the command component's JSON-lines events (`vdev-device.wasm` prints one object per
//! line, `{"event": ...}`), whether it runs in this process ([`crate::wasi_host::CommandRun`])
//! or in a `vdev-wasi-host` child process: both give their lines on a channel.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;
use vdev_platform::PlatformInfo;

use crate::platform_admin::approve;

/// Longest wait for one awaited event.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Reads events until `pick` accepts one; every event seen is appended to `seen`. Panics when
/// the lines end or the deadline passes first.
pub async fn next_event<T>(
    lines: &mut UnboundedReceiver<String>,
    seen: &mut Vec<Value>,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> T {
    timeout(DEADLINE, async {
        loop {
            let line = lines.recv().await.unwrap_or_else(|| {
                panic!("the instance ended before the awaited event; saw {seen:?}")
            });
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            let found = pick(&event);
            seen.push(event);
            if let Some(found) = found {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("event within the deadline; saw {} events", seen.len()))
}

/// Picks the first event with this name.
pub fn named(name: &'static str) -> impl FnMut(&Value) -> Option<Value> {
    move |event| (event["event"] == name).then(|| event.clone())
}

/// Picks the `n`th event with this name.
pub fn nth_named(name: &'static str, n: usize) -> impl FnMut(&Value) -> Option<()> {
    let mut seen = 0;
    move |event| {
        seen += usize::from(event["event"] == name);
        (seen == n).then_some(())
    }
}

/// How many of the events have this name.
pub fn count(seen: &[Value], name: &str) -> usize {
    seen.iter().filter(|e| e["event"] == name).count()
}

/// Approves the instance's provisioning operation and waits until it registered.
pub async fn provision(
    info: &PlatformInfo,
    lines: &mut UnboundedReceiver<String>,
    seen: &mut Vec<Value>,
) {
    let operation = next_event(lines, seen, named("provisioning-operation")).await;
    assert!(
        operation["verificationCode"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    approve(info, operation["id"].as_str().expect("operation id")).await;
    next_event(lines, seen, named("registered")).await;
}

/// Numbered lines, `<device> reading <n>` for each `n` in the range.
pub fn readings(device: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{device} reading {n}")).collect()
}

/// The lines as one block of text, each ended by a newline.
pub fn as_stdin(lines: &[String]) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}
