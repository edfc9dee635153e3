//! Set-up and waiting shared by the tests of the WASI library world (`vdev:device/client`):
//! a fresh stand-in Platform with the compiled components, and polling a device until an event
//! the test is waiting for arrives.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vdev_platform::{Config, Platform, RunningPlatform};

use crate::wasi_host::{LibraryDevice, LibraryEvent, WasiHost};

/// A fresh Platform in `dir`, the compiled components, and an empty store directory for one
/// device.
pub async fn platform_host_and_store(dir: &Path) -> (RunningPlatform, WasiHost, PathBuf) {
    let platform = Platform::start(Config::ephemeral(dir.join("platform")))
        .await
        .expect("platform starts");
    let host = tokio::task::spawn_blocking(WasiHost::load)
        .await
        .expect("load task")
        .expect("the components build and compile");
    let store = dir.join("device");
    std::fs::create_dir_all(&store).expect("store dir");
    (platform, host, store)
}

/// Polls `device` until `pick` accepts an event, at most `within`; every event it looked at
/// goes to `seen`, and those after the accepted one are left for the next wait. Panics with
/// what was seen when the time is up.
pub async fn poll_until<T>(
    device: &mut LibraryDevice,
    seen: &mut Vec<LibraryEvent>,
    within: Duration,
    mut pick: impl FnMut(&LibraryEvent) -> Option<T>,
) -> T {
    let end = Instant::now() + within;
    while Instant::now() < end {
        let mut events = device.poll(200).await.expect("poll").into_iter();
        while let Some(event) = events.next() {
            let found = pick(&event);
            seen.push(event);
            if let Some(found) = found {
                // The rest of the batch is for the next wait.
                device.unread(events);
                return found;
            }
        }
    }
    panic!("no awaited event within {within:?}; saw {seen:?}");
}
