//! The WASI command component when things go wrong, against the stand-in Platform on loopback:
//! the host process killed with `SIGKILL` mid-send and started again on the same directory, an
//! outbox segment with a torn tail or a flipped byte, and the Platform stopped and started again
//! (same data directory and ports) in the middle of a stream. In every case a user checks the
//! same thing: every message whose send returned is stored at the Platform once, in order.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;
use vdev_platform::{Config, Platform, PlatformInfo};
use vdev_tests::command_events::{
    DEADLINE, as_stdin, count, named, next_event, nth_named, provision, readings,
};
use vdev_tests::platform_admin::{
    command_args, device_messages, payload_texts, restart_config, sequence_numbers,
    strictly_increasing,
};
use vdev_tests::wasi_host::{CommandRun, WasiHost};

async fn load_host() -> WasiHost {
    tokio::task::spawn_blocking(WasiHost::load)
        .await
        .expect("load task")
        .expect("the component builds and compiles")
}

fn spawn(host: &WasiHost, info: &PlatformInfo, device_id: &str, store: &Path) -> CommandRun {
    std::fs::create_dir_all(store).expect("store dir");
    host.spawn_command(&command_args(info, device_id), &[], store)
        .expect("instance starts")
}

/// Waits for `done` and the exit code 0.
async fn finish(mut run: CommandRun, mut seen: Vec<Value>) -> Vec<Value> {
    next_event(&mut run.lines, &mut seen, named("done")).await;
    let code = timeout(DEADLINE, run.wait())
        .await
        .expect("exit within the deadline")
        .expect("the instance runs without a trap");
    assert_eq!(code, 0, "exit code; events: {seen:?}");
    seen
}

async fn stored(info: &PlatformInfo, device_id: &str) -> (Vec<String>, Vec<u64>) {
    let messages = device_messages(info, device_id).await;
    (payload_texts(&messages), sequence_numbers(&messages))
}

fn segments(store: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(store)
        .expect("store dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-"))
        })
        .collect();
    segments.sort();
    segments
}

/// Registered and connected, then the Platform goes away and `lines` are stored (not
/// delivered); the instance is then ended at once. Returns the Platform's info.
async fn store_while_platform_is_down(
    host: &WasiHost,
    dir: &Path,
    device_id: &str,
    lines: &[String],
) -> PlatformInfo {
    let platform = Platform::start(Config::ephemeral(dir.join("platform")))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    let mut run = spawn(host, &info, device_id, &dir.join("device"));
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;
    next_event(&mut run.lines, &mut seen, |e| {
        (e["event"] == "connection-state-changed" && e["state"] == "connected").then_some(())
    })
    .await;
    platform.shutdown().await;
    run.write_stdin(as_stdin(lines).as_bytes())
        .await
        .expect("stdin open");
    next_event(&mut run.lines, &mut seen, nth_named("stored", lines.len())).await;
    assert_eq!(count(&seen, "message-delivered"), 0);
    run.kill().await;
    info
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_cuts_a_torn_outbox_tail_and_drains_after_the_platform_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = load_host().await;
    let store = dir.path().join("device");
    let expected = readings("wasi-torn", 0..50);
    let info = store_while_platform_is_down(&host, dir.path(), "wasi-torn", &expected).await;

    // A crash in the middle of the next append leaves half a record header.
    let segment = segments(&store)
        .pop()
        .expect("undelivered messages keep a segment");
    let mut bytes = std::fs::read(&segment).expect("segment");
    bytes.extend_from_slice(&[0x2a, 0x00, 0x00]);
    std::fs::write(&segment, &bytes).expect("torn tail written");

    let platform = Platform::start(restart_config(&info))
        .await
        .expect("platform restarts on the same data dir and ports");
    let mut run = spawn(&host, &info, "wasi-torn", &store);
    run.close_stdin();
    let mut seen = Vec::new();
    let recovery = next_event(&mut run.lines, &mut seen, named("outbox-recovered")).await;
    assert_eq!(recovery["reason"], "torn frame header", "{recovery}");
    assert_eq!(recovery["cutBytes"], 3);
    let seen = finish(run, seen).await;
    assert_eq!(count(&seen, "provisioning-operation"), 0);

    let (payloads, sequences) = stored(&info, "wasi-torn").await;
    assert_eq!(
        payloads, expected,
        "the records before the torn tail all delivered, in order"
    );
    assert!(strictly_increasing(&sequences));
    platform.shutdown().await;
}

/// Start offsets of the frames of a segment (`len u32 LE | crc32 | seq | data`).
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        starts.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 8 + len;
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_cuts_an_outbox_record_with_a_flipped_byte_and_delivers_those_before_it() {
    const CORRUPT: usize = 30;
    let dir = tempfile::tempdir().expect("temp dir");
    let host = load_host().await;
    let store = dir.path().join("device");
    let expected = readings("wasi-flip", 0..50);
    let info = store_while_platform_is_down(&host, dir.path(), "wasi-flip", &expected).await;

    // One bit of record 30's payload rots on disk while the device is stopped.
    let segment = segments(&store)
        .pop()
        .expect("undelivered messages keep a segment");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let needle = expected[CORRUPT].as_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the payload is in the segment");
    bytes[at + needle.len() - 1] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("flipped byte written");
    let starts = frame_starts(&bytes);
    let corrupt_frame = starts
        .iter()
        .rposition(|start| *start < at)
        .expect("a frame holds the payload");
    assert_eq!(corrupt_frame, CORRUPT, "one frame per record");
    let valid = starts[corrupt_frame];

    let platform = Platform::start(restart_config(&info))
        .await
        .expect("platform restarts on the same data dir and ports");
    let mut run = spawn(&host, &info, "wasi-flip", &store);
    let mut seen = Vec::new();
    let recovery = next_event(&mut run.lines, &mut seen, named("outbox-recovered")).await;
    let file_name = segment.file_name().and_then(|n| n.to_str()).expect("name");
    assert_eq!(recovery["file"], file_name, "{recovery}");
    assert_eq!(recovery["reason"], "checksum mismatch", "{recovery}");
    assert_eq!(recovery["validBytes"], valid as u64, "{recovery}");
    assert_eq!(recovery["cutBytes"], (bytes.len() - valid) as u64);

    // The device goes on: new messages follow the records that survived.
    let after = readings("wasi-flip after", 0..5);
    run.write_stdin(as_stdin(&after).as_bytes())
        .await
        .expect("stdin open");
    run.close_stdin();
    let seen = finish(run, seen).await;
    assert_eq!(count(&seen, "stored"), after.len());
    assert_eq!(count(&seen, "provisioning-operation"), 0);

    let (payloads, sequences) = stored(&info, "wasi-flip").await;
    let mut delivered = expected[..CORRUPT].to_vec();
    delivered.extend(after);
    assert_eq!(
        payloads, delivered,
        "the records before the corrupt one, then the new ones, once each, in order"
    );
    assert!(strictly_increasing(&sequences));
    // The cut records could have been delivered (removals are not synced): a new message that
    // reused one of their numbers would be dropped by the Platform as a replay.
    assert!(
        sequences[CORRUPT..]
            .iter()
            .all(|n| *n >= expected.len() as u64),
        "new messages are numbered above every record ever written: {sequences:?}"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_drains_in_order_when_the_platform_restarts_mid_stream() {
    const MESSAGES: usize = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(Config::ephemeral(dir.path().join("platform")))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    let host = load_host().await;
    let mut run = spawn(&host, &info, "wasi-outage", &dir.path().join("device"));
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;

    let expected = readings("wasi-outage", 0..MESSAGES);
    let half = MESSAGES / 2;
    run.write_stdin(as_stdin(&expected[..half]).as_bytes())
        .await
        .expect("stdin open");
    next_event(
        &mut run.lines,
        &mut seen,
        nth_named("message-delivered", 100),
    )
    .await;
    platform.shutdown().await;

    // Sends go on while the Platform is away: all stored, the rest waits in the outbox.
    run.write_stdin(as_stdin(&expected[half..]).as_bytes())
        .await
        .expect("stdin open");
    let stored_before = count(&seen, "stored");
    next_event(
        &mut run.lines,
        &mut seen,
        nth_named("stored", MESSAGES - stored_before),
    )
    .await;
    let delivered_during_outage = count(&seen, "message-delivered");
    assert!(
        delivered_during_outage < MESSAGES,
        "a backlog built up ({delivered_during_outage} delivered)"
    );

    let platform = Platform::start(restart_config(&info))
        .await
        .expect("platform restarts on the same data dir and ports");
    run.close_stdin();
    let seen = finish(run, seen).await;
    let mut delivered: Vec<u64> = seen
        .iter()
        .filter(|e| e["event"] == "message-delivered")
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    delivered.sort_unstable();
    delivered.dedup();
    assert_eq!(delivered.len(), MESSAGES, "every message acknowledged");

    let (payloads, sequences) = stored(&info, "wasi-outage").await;
    assert_eq!(payloads, expected, "all stored once, in order");
    assert!(strictly_increasing(&sequences));
    platform.shutdown().await;
}

/// `vdev-wasi-host`, this package's wasmtime host binary, as a child process.
struct HostProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl HostProcess {
    /// Runs the command component compiled in `compiled` (see `save_compiled_command`).
    fn spawn(compiled: &Path, store: &Path, args: &[String]) -> Self {
        std::fs::create_dir_all(store).expect("store dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vdev-wasi-host"))
            .arg("--store")
            .arg(store)
            .args(args)
            .env("VDEV_WASI_COMMAND_COMPILED", compiled)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("host process starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (line_tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_host_killed_with_sigkill_mid_send_loses_and_duplicates_nothing_it_reported_stored() {
    const MESSAGES: usize = 2_000;
    const BATCH: usize = 20;
    const KILL_AFTER_DELIVERED: usize = 300;
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(Config::ephemeral(dir.path().join("platform")))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    // The child processes load the command component this process compiled.
    let compiled = dir.path().join("vdev-device.cwasm");
    load_host()
        .await
        .save_compiled_command(&compiled)
        .expect("compiled component saved");
    let store = dir.path().join("device");
    let args = command_args(&info, "wasi-kill");

    let mut host = HostProcess::spawn(&compiled, &store, &args);
    let mut seen = Vec::new();
    provision(&info, &mut host.lines, &mut seen).await;
    // Lines go in 20 at a time, each batch once the previous one is reported stored, so
    // storing and delivering overlap; the kill lands right after a batch was written, with
    // messages being appended, published and acknowledged at that moment.
    let expected = readings("wasi-kill", 0..MESSAGES);
    let mut stdin = host.stdin.take().expect("stdin");
    let started = Instant::now();
    for lines in expected.chunks(BATCH) {
        stdin
            .write_all(as_stdin(lines).as_bytes())
            .await
            .expect("stdin open");
        let delivered = count(&seen, "message-delivered");
        if delivered >= KILL_AFTER_DELIVERED && count(&seen, "stored") > delivered {
            break;
        }
        next_event(&mut host.lines, &mut seen, nth_named("stored", BATCH)).await;
    }
    // SIGKILL: no chance to flush, close or acknowledge anything.
    host.child.kill().await.expect("SIGKILL");
    let kill_at = started.elapsed();
    drop(stdin);
    while let Ok(line) = host.lines.try_recv() {
        seen.extend(serde_json::from_str::<Value>(&line).ok());
    }
    let reported_stored = count(&seen, "stored");
    let delivered_before_kill = count(&seen, "message-delivered");
    assert!(delivered_before_kill >= KILL_AFTER_DELIVERED);
    assert!(
        reported_stored > delivered_before_kill,
        "killed with messages stored but not yet acknowledged"
    );
    let stored_seqs: Vec<u64> = seen
        .iter()
        .filter(|e| e["event"] == "stored")
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert!(strictly_increasing(&stored_seqs));

    // Restarted on the same directory with no new input: it drains what it had and exits.
    let restarted = Instant::now();
    let mut host = HostProcess::spawn(&compiled, &store, &args);
    drop(host.stdin.take());
    let mut seen = Vec::new();
    next_event(&mut host.lines, &mut seen, named("done")).await;
    let status = timeout(DEADLINE, host.child.wait())
        .await
        .expect("exit within the deadline")
        .expect("exit status");
    let drained_in = restarted.elapsed();
    assert!(status.success(), "{status}; events: {seen:?}");
    assert_eq!(
        count(&seen, "provisioning-operation"),
        0,
        "the restart reuses the saved registration"
    );

    let (payloads, sequences) = stored(&info, "wasi-kill").await;
    assert!(
        payloads.len() >= reported_stored,
        "every message reported stored reached the Platform: {} of {reported_stored}",
        payloads.len()
    );
    assert_eq!(
        payloads,
        expected[..payloads.len()],
        "once each, in order, nothing after a gap"
    );
    assert!(strictly_increasing(&sequences));
    assert_eq!(
        sequences[..reported_stored],
        stored_seqs[..],
        "stored under the sequence numbers the component reported"
    );
    eprintln!(
        "killed {:?} after the first line, with {reported_stored} reported stored and \
         {delivered_before_kill} acknowledged; {} stored at the Platform after the restart, \
         which took {:?} to start, drain and exit",
        kill_at,
        payloads.len(),
        drained_in
    );
    platform.shutdown().await;
}
