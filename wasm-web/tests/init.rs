//! `DeviceClient.start` before the package's `init()` has handed the JavaScript host the wasm
//! `Core`. A test binary of its own: the host keeps the `Core` it was given for the life of the
//! page, and every other suite gives it one.

#![cfg(target_arch = "wasm32")]

mod common;

use common::{DeviceClient, js_object, unique};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn start_before_init_is_refused_with_a_clear_error() {
    // Valid options, and port 9 on loopback: only the missing wasm module can be refused.
    let options = js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", unique("vdev-init").into()),
    ]);
    let error = JsFuture::from(DeviceClient::start_promise(&options))
        .await
        .expect_err("start refuses to run without the wasm module");
    let message: String = error
        .dyn_into::<js_sys::Error>()
        .expect("an Error")
        .message()
        .into();
    assert_eq!(
        message,
        "the wasm module is not initialised: call init() first"
    );
}
