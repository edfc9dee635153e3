//! The file-upload API: the slot a device asks for, the blob PUT and the notification, and what
//! an upload URL allows: nothing after the upload completed, nothing with a forged signature.

mod common;

use common::TestPlatform;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn an_upload_url_writes_its_blob_once_and_nothing_else() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("upload-01").await;
    let files = format!("{}/devices/{}/files", platform.base(), device.client_id());
    let slot: Value = platform
        .http
        .post(&files)
        .header("Authorization", &device.sas)
        .json(&json!({"blobName": "o1-7"}))
        .send()
        .await
        .expect("files")
        .json()
        .await
        .expect("slot json");
    let url = slot["uploadUrl"].as_str().expect("upload url").to_owned();
    assert!(url.contains("&se="), "the URL carries its expiry: {url}");
    let put = |url: String, body: &'static str| {
        let http = platform.http.clone();
        async move {
            http.put(url)
                .header("x-ms-blob-type", "BlockBlob")
                .body(body)
                .send()
                .await
                .expect("put")
                .status()
        }
    };
    // A forged signature, or another expiry under the same signature, writes nothing.
    let forged = url.replace("&sig=", "&sig=AAAA");
    assert_eq!(put(forged, "forged").await, StatusCode::FORBIDDEN);
    let extended = with_expiry(&url, 4_102_444_800);
    assert_eq!(put(extended, "extended").await, StatusCode::FORBIDDEN);

    assert_eq!(put(url.clone(), "the blob").await, StatusCode::CREATED);
    let notified = platform
        .http
        .post(format!("{files}/notifications"))
        .header("Authorization", &device.sas)
        .json(&json!({"correlationId": slot["correlationId"], "isSuccess": true}))
        .send()
        .await
        .expect("notify")
        .status();
    assert!(notified.is_success(), "{notified}");
    // Once the upload completed, its URL can no longer overwrite the blob.
    assert_eq!(put(url, "overwritten").await, StatusCode::CONFLICT);
    let (_, blobs) = platform.admin("GET", "/blobs", None).await;
    assert_eq!(blobs[0]["size"], "the blob".len(), "{blobs}");
}

/// `url` with its `se=` value replaced.
fn with_expiry(url: &str, expiry: u64) -> String {
    let (head, tail) = url.split_once("&se=").expect("an expiry");
    let rest = tail.split_once('&').map_or("", |(_, rest)| rest);
    format!("{head}&se={expiry}&{rest}")
}
