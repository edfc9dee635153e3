//! The command component: a ready virtual device (see `vdev_wasi::command`).

#[cfg(target_os = "wasi")]
fn main() {
    std::process::exit(vdev_wasi::command::main());
}

#[cfg(not(target_os = "wasi"))]
fn main() {
    eprintln!("vdev-device is a WASI component: build it with --target wasm32-wasip2");
    std::process::exit(2);
}
