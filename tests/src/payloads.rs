//! Payloads the cross-crate tests send.

/// `len` bytes Brotli cannot shrink: a deterministic xorshift stream, so a failure reproduces.
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
