//! The wasmtime host of `src/wasi_host.rs` as its own process, so a test can kill it with
//! `SIGKILL` mid-send and start it again on the same store directory.
//!
//! `vdev-wasi-host --store <dir> [command component arguments...]` runs one instance of the
//! command component (`VDEV_WASI_COMMAND` names it; otherwise it is built) with `<dir>` preopened
//! as `.`, passes this process's standard input through to it, prints every line it writes (its
//! JSON events) on standard output as soon as it is written, and exits with its exit code.

use std::io::Write;
use std::path::PathBuf;

use tokio::io::AsyncReadExt;
use vdev_tests::wasi_host::WasiHost;

fn usage() -> ! {
    eprintln!("usage: vdev-wasi-host --store <dir> [command component arguments...]");
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let store = match (args.next().as_deref(), args.next()) {
        (Some("--store"), Some(dir)) => PathBuf::from(dir),
        _ => usage(),
    };
    let component_args: Vec<String> = args.collect();
    let host = match tokio::task::spawn_blocking(WasiHost::load_command).await {
        Ok(Ok(host)) => host,
        Ok(Err(error)) => {
            eprintln!("vdev-wasi-host: {error:#}");
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("vdev-wasi-host: loading failed: {error}");
            std::process::exit(1);
        }
    };
    let mut run = match host.spawn_command(&component_args, &[], &store) {
        Ok(run) => run,
        Err(error) => {
            eprintln!("vdev-wasi-host: {error:#}");
            std::process::exit(1);
        }
    };
    let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n) = stdin.read(&mut buffer).await {
            if n == 0 || stdin_tx.send(buffer[..n].to_vec()).await.is_err() {
                return;
            }
        }
    });
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = run.lines.recv() => match line {
                Some(line) => {
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "{line}");
                    let _ = stdout.flush();
                }
                None => break,
            },
            bytes = stdin_rx.recv(), if stdin_open => match bytes {
                Some(bytes) => {
                    if run.write_stdin(&bytes).await.is_err() {
                        stdin_open = false;
                    }
                }
                None => {
                    run.close_stdin();
                    stdin_open = false;
                }
            },
        }
    }
    let code = match run.wait().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("vdev-wasi-host: the component trapped: {error:#}");
            1
        }
    };
    std::process::exit(code);
}
