//! A real `QuotaExceededError` from headless Chromium and Firefox: the test fills the site's
//! storage with 1 MB messages until the browser refuses one. `scripts/test.sh` runs this suite
//! with the browser's profile on a 256 MB tmpfs (through `TMPDIR`, where chromedriver and
//! geckodriver make the profile): both size a site's quota from the free space of the profile's
//! disk, so it is reached after tens of messages instead of gigabytes. Firefox holds a site that
//! is not persisted to its group limit (the quota `estimate()` reports); one that is persisted may
//! use far more, so there the user declines `persist()` (test.sh's preferences). (Chromium's
//! DevTools quota override, tried before, had no effect; a much smaller tmpfs fills up before the
//! quota is reached, which IndexedDB reports as an `IOError`/`UnknownError`, not as quota.)

#![cfg(target_arch = "wasm32")]

mod common;

use common::{DeviceClient, js_object, unique};
use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Message size: large values are kept as files of their own (both engines), and random bytes
/// do not compress.
const CHUNK: usize = 1 << 20;

/// The largest quota this test is willing to fill (Chromium reports 1 GiB on the small disk,
/// though it refuses much earlier).
const MAX_QUOTA: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;

/// The site's storage quota in bytes, as `navigator.storage.estimate()` reports it.
async fn storage_quota() -> f64 {
    let storage = Reflect::get(&js_sys::global(), &"navigator".into())
        .and_then(|navigator| Reflect::get(&navigator, &"storage".into()))
        .expect("navigator.storage");
    let estimate: js_sys::Function = Reflect::get(&storage, &"estimate".into())
        .unwrap()
        .unchecked_into();
    let promise: Promise = estimate.call0(&storage).unwrap().unchecked_into();
    let estimate = JsFuture::from(promise).await.expect("an estimate");
    Reflect::get(&estimate, &"quota".into())
        .unwrap()
        .as_f64()
        .expect("a quota")
}

async fn start(database: &str) -> DeviceClient {
    // Port 9 on loopback: nothing answers, so every message stays queued.
    DeviceClient::start(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", database.into()),
    ]))
    .await
    .expect("the client starts")
}

#[wasm_bindgen_test]
async fn a_full_quota_rejects_the_send_with_a_clear_error_and_keeps_what_was_stored() {
    let quota = storage_quota().await;
    assert!(
        quota <= MAX_QUOTA,
        "a quota of {quota} bytes is too large to fill in a test: run this suite through \
         wasm-web/scripts/test.sh, which puts the browser's profile on a small tmpfs"
    );
    let database = unique("vdev-quota");
    let client = start(&database).await;
    let sender = client.create_stream_sender(None).unwrap();
    // Random bytes (nothing can compress them), made once; each message differs in its head.
    let mut payload: Vec<u8> = (0..CHUNK)
        .map(|_| (js_sys::Math::random() * 256.0) as u8)
        .collect();
    let attempts = (quota / CHUNK as f64) as usize + 64;
    let mut stored = 0;
    let mut refusal = None;
    for attempt in 0..attempts {
        payload[..8].copy_from_slice(&(attempt as u64).to_le_bytes());
        let bytes = Uint8Array::from(payload.as_slice());
        let send = sender.send_message(bytes.unchecked_into(), None);
        match JsFuture::from(Promise::from(JsValue::from(send))).await {
            Ok(_) => stored += 1,
            Err(error) => {
                refusal = Some(common::api_error(error));
                break;
            }
        }
    }
    let refusal = refusal
        .unwrap_or_else(|| panic!("{attempts} MB were stored under a quota of {quota} bytes"));
    assert_eq!(
        refusal,
        "quotaExceeded: message not stored: the storage quota is exhausted (what was stored \
         before is kept)"
    );
    assert!(stored > 0, "the quota holds at least one message");
    web_sys::console::log_1(&JsValue::from_str(&format!(
        "{stored} messages of 1 MB stored before QuotaExceededError (reported quota {quota})"
    )));
    assert_eq!(client.pending_messages_count(), stored as f64);
    JsFuture::from(Promise::from(JsValue::from(client.stop())))
        .await
        .unwrap();

    // Everything stored before the refusal is still there after a restart.
    let again = start(&database).await;
    assert_eq!(again.pending_messages_count(), stored as f64);
    JsFuture::from(Promise::from(JsValue::from(again.stop())))
        .await
        .unwrap();
    common::delete_database(&database).await.expect("deleted");
}
