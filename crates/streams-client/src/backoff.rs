//! [`Backoff`]: reconnection delays — exponential with jitter, capped, reset on success. The first
//! retries stay quick (at most [`Backoff::quick_max`] apart for [`Backoff::quick_attempts`]
//! attempts), so a bridge back after a restart of a few seconds is found within about a second;
//! after that they spread out to `max`. Sans-IO: the caller supplies the random draw, so tests are
//! deterministic.
use std::time::Duration;

/// Reconnection delay policy and state.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// First delay ceiling.
    pub base: Duration,
    /// Largest delay ceiling.
    pub max: Duration,
    /// Largest delay ceiling of the first [`Backoff::quick_attempts`] attempts.
    pub quick_max: Duration,
    /// How many attempts stay within [`Backoff::quick_max`].
    pub quick_attempts: u32,
    attempt: u32,
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 1 s apart for the first 60 attempts (45 s of outage or more), then
    /// up to 10 s: a player whose network was gone for half a minute is back within a second of
    /// it returning, and one connection attempt a second costs a bridge little.
    fn default() -> Self {
        Backoff {
            quick_max: Duration::from_secs(1),
            quick_attempts: 60,
            ..Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
        }
    }
}

impl Backoff {
    /// A policy growing from `base` to `max` (with no quick phase).
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            quick_max: max,
            quick_attempts: 0,
            attempt: 0,
        }
    }

    /// Failed attempts since the last success.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt; `unit` is a uniform draw in `[0, 1)`. The delay lies in
    /// `[ceiling / 2, ceiling]` with `ceiling = min(max, base * 2^attempt)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let cap = if self.attempt < self.quick_attempts {
            self.quick_max.min(self.max)
        } else {
            self.max
        };
        let ceiling = self.base.saturating_mul(factor).min(cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[4], Duration::from_millis(1600));
        assert_eq!(delays[5], Duration::from_secs(2));
        assert_eq!(delays[7], Duration::from_secs(2));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }

    #[test]
    fn the_default_retries_within_a_second_for_the_first_45_seconds_then_spreads_out() {
        let mut b = Backoff::default();
        let quick: Vec<Duration> = (0..60).map(|_| b.next_delay(1.0)).collect();
        assert!(
            quick.iter().all(|d| *d <= Duration::from_secs(1)),
            "{quick:?}"
        );
        let quick_total: Duration = quick.iter().sum();
        assert!(quick_total >= Duration::from_secs(55), "{quick_total:?}");
        assert_eq!(b.next_delay(1.0), Duration::from_secs(10));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
    }
}
