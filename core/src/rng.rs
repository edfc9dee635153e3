//! The core's only source of randomness: a small deterministic generator seeded by the host.
//!
//! The core never draws entropy itself (there is no portable way on `wasm32-unknown-unknown`,
//! and tests must be reproducible). The host passes 32 random bytes at construction, as
//! quinn-proto does with `rng_seed`; everything random after that (MQTT packet ids, backoff
//! jitter, request ids) comes from this generator. It is xoshiro256** written out by hand: a
//! dozen lines instead of the `rand` crate's bytes in the browser bundle. It is not a
//! cryptographic generator and is never used for secrets.

/// xoshiro256** seeded from host-supplied bytes. (Public to the core's simulator through
/// `testing`, whose generator is this one seeded through [`splitmix64`].)
#[derive(Debug, Clone)]
pub struct Rng {
    state: [u64; 4],
}

/// One step of SplitMix64 (Steele, Lea and Flood, 2014): advances `x` and returns the mixed
/// output; the recommended way to spread a small seed over xoshiro's state.
pub fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The generator whose state is `seed` read as four little-endian words.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let mut state = [0u64; 4];
        for (word, chunk) in state.iter_mut().zip(seed.as_chunks::<8>().0) {
            *word = u64::from_le_bytes(*chunk);
        }
        // An all-zero state would only ever produce zeros; splitmix the seed into a usable one.
        if state == [0; 4] {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for word in &mut state {
                *word = splitmix64(&mut x);
            }
        }
        Self { state }
    }

    /// An independent generator for a sub-machine, drawn from this one.
    pub(crate) fn fork(&mut self) -> Rng {
        let mut seed = [0u8; 32];
        for chunk in seed.as_chunks_mut::<8>().0 {
            *chunk = self.next_u64().to_le_bytes();
        }
        Rng::from_seed(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniformly distributed value in `0..=max`.
    pub(crate) fn below_or_equal(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        // Multiply-shift keeps the bias below 2^-64 * (max + 1): irrelevant for jitter and ids.
        ((u128::from(self.next_u64()) * (u128::from(max) + 1)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[test]
    fn same_seed_gives_same_sequence_and_zero_seed_is_usable() {
        let mut a = Rng::from_seed([7; 32]);
        let mut b = Rng::from_seed([7; 32]);
        assert_eq!(
            (0..8).map(|_| a.next_u64()).collect::<Vec<_>>(),
            (0..8).map(|_| b.next_u64()).collect::<Vec<_>>()
        );
        let mut zero = Rng::from_seed([0; 32]);
        let draws: Vec<u64> = (0..4).map(|_| zero.next_u64()).collect();
        assert!(draws.iter().any(|&x| x != 0));
    }

    #[test]
    fn below_or_equal_stays_in_range() {
        let mut rng = Rng::from_seed([3; 32]);
        for max in [0, 1, 2, 10, 1000] {
            for _ in 0..200 {
                assert!(rng.below_or_equal(max) <= max);
            }
        }
    }
}
