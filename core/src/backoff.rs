//! Reconnect and retry delays: exponential growth with full jitter, capped, reset on success.
//!
//! "Full jitter" (a uniform draw between zero and the exponential ceiling) spreads a fleet of
//! devices that lost the Platform at the same moment, so they do not come back in lockstep.
//! A `Retry-After` from the Platform overrides the draw: the server knows best when to return.

use crate::rng::Rng;

/// Limits of the exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first retry's delay, in milliseconds.
    pub initial_ms: u64,
    /// Largest ceiling the delay may grow to, in milliseconds.
    pub max_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            max_ms: 60_000,
        }
    }
}

/// The retry state of one activity (connecting, provisioning, an upload...).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            failures: 0,
        }
    }

    /// Records a failure and returns how long to wait before the next attempt.
    /// `retry_after_ms`, when the Platform sent one, is honoured as the delay.
    pub(crate) fn next_delay(&mut self, rng: &mut Rng, retry_after_ms: Option<u64>) -> u64 {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        match retry_after_ms {
            Some(delay) => delay,
            None => rng.below_or_equal(ceiling),
        }
    }

    /// The current upper bound of the jittered delay.
    pub(crate) fn ceiling(&self) -> u64 {
        let shift = self.failures.min(40);
        self.config
            .initial_ms
            .saturating_mul(1u64 << shift)
            .min(self.config.max_ms)
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap_and_resets() {
        let mut rng = Rng::from_seed([1; 32]);
        let mut backoff = Backoff::new(BackoffConfig {
            initial_ms: 100,
            max_ms: 1_000,
        });
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(backoff.ceiling());
            let delay = backoff.next_delay(&mut rng, None);
            assert!(delay <= *ceilings.last().unwrap());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), 100);
    }

    #[test]
    fn retry_after_overrides_the_jitter_but_still_counts_a_failure() {
        let mut rng = Rng::from_seed([2; 32]);
        let mut backoff = Backoff::new(BackoffConfig::default());
        assert_eq!(backoff.next_delay(&mut rng, Some(5_000)), 5_000);
        assert_eq!(backoff.failures(), 1);
    }

    #[test]
    fn a_million_failures_do_not_overflow() {
        let mut rng = Rng::from_seed([2; 32]);
        let mut backoff = Backoff::new(BackoffConfig::default());
        for _ in 0..100 {
            backoff.next_delay(&mut rng, None);
        }
        assert_eq!(backoff.ceiling(), 60_000);
    }
}
