//! HTTP requests of the core performed with `fetch`, aborted with an `AbortController` at the
//! request's deadline (the core gives up on it then anyway).

use js_sys::{Promise, Uint8Array};
use vdev_core::{HttpRequest, HttpResponse};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, Request, RequestInit, Response};

use crate::runtime::{Timeout, check_url_allowed, describe, now_ms};

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`, present in pages and workers alike.
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_request(request: &Request) -> Promise;
}

/// Performs `request`; an error is a failure without an answer (network, abort, refused url).
pub(crate) async fn perform(request: HttpRequest) -> Result<HttpResponse, String> {
    check_url_allowed(&request.url)?;
    let js = |error: JsValue| describe(&error);
    let controller = AbortController::new().map_err(js)?;
    let init = RequestInit::new();
    init.set_method(request.method.as_str());
    init.set_signal(Some(&controller.signal()));
    let headers = Headers::new().map_err(js)?;
    for (name, value) in &request.headers {
        headers.append(name, value).map_err(js)?;
    }
    init.set_headers(&headers);
    if !request.body.is_empty() {
        init.set_body(&Uint8Array::from(request.body.as_slice()));
    }
    let fetch = Request::new_with_str_and_init(&request.url, &init).map_err(js)?;
    let wait = request
        .deadline
        .saturating_sub(now_ms())
        .min(i32::MAX as u64) as u32;
    // Dropped (cancelled) when this function returns; until then it also bounds reading the body.
    let _abort = Timeout::new(wait, Box::new(move || controller.abort()));
    // `fetch` resolves with a `Response`, always.
    let response: Response = JsFuture::from(fetch_request(&fetch))
        .await
        .map_err(js)?
        .unchecked_into();
    let retry_after = response.headers().get("retry-after").ok().flatten();
    let body = JsFuture::from(response.array_buffer().map_err(js)?)
        .await
        .map_err(js)?;
    Ok(HttpResponse {
        status: response.status(),
        retry_after,
        body: Uint8Array::new(&body).to_vec(),
    })
}
