//! The Brotli encoder an app lends vdev-web's device when it wants compressed streams
//! (`import loadBrotli from "vdev-web/brotli"`, then `start({ brotli: await loadBrotli() })`).
//!
//! It is a wasm module of its own because the encoder is large: linked into the default
//! bundle it made it about five times larger (`wasm-web/SIZE.md` has the figures), for a
//! feature most browser apps do not use. The core decides when to compress and keeps the
//! result only when smaller; this module only encodes, with the same `brotli` crate the core
//! uses where it has its own encoder (the WASI component, the Node.js build).

use wasm_bindgen::prelude::*;

/// `payload` Brotli-encoded at `quality` (clamped to 0–11: 1 is the fastest setting, 11 the
/// smallest).
#[wasm_bindgen]
pub fn encode(payload: &[u8], quality: u32) -> Result<Vec<u8>, JsError> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: quality.min(11) as i32,
        size_hint: payload.len(),
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &payload[..], &mut out, &params)
        .map_err(|error| JsError::new(&format!("brotli: {error}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_what_decodes_to_the_payload() {
        let payload = b"reading 21.5 C; ".repeat(200);
        for quality in [1, 11] {
            let encoded = super::encode(&payload, quality).unwrap();
            assert!(encoded.len() < payload.len() / 10, "quality {quality}");
            let mut decoded = Vec::new();
            brotli::BrotliDecompress(&mut &encoded[..], &mut decoded).unwrap();
            assert_eq!(decoded, payload);
        }
    }
}
