//! Capped, jittered exponential backoff with a retry budget.

use std::time::Duration;

use rand::RngExt;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Consecutive failed attempts of one operation before it is given up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { base: Duration::from_millis(20), cap: Duration::from_secs(5), max_attempts: 25 }
    }
}

impl RetryPolicy {
    /// "Full jitter": a uniform delay up to `min(cap, base * 2^attempt)`, so that
    /// workers that conflicted with each other do not retry in step.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self.base.as_secs_f64() * 2f64.powi(attempt.min(30) as i32);
        let ceiling = exp.min(self.cap.as_secs_f64());
        Duration::from_secs_f64(ceiling * unit.clamp(0.0, 1.0))
    }
}

/// The attempts of one operation.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, attempt: 0 }
    }

    /// The delay before the next attempt, or None when the budget is spent.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.attempt + 1 >= self.policy.max_attempts {
            return None;
        }
        let unit: f64 = rand::rng().random();
        let delay = self.policy.delay(self.attempt, unit);
        self.attempt += 1;
        Some(delay)
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_exponentially_up_to_the_cap() {
        let p = RetryPolicy { base: Duration::from_millis(10), cap: Duration::from_secs(1), max_attempts: 10 };
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(10));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(80));
        assert_eq!(p.delay(20, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(40));
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn the_budget_ends_the_retries() {
        let mut b = Backoff::new(RetryPolicy { max_attempts: 3, ..RetryPolicy::default() });
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_none());
        assert_eq!(b.attempts(), 2);
    }

    #[test]
    fn jittered_delays_stay_under_the_ceiling() {
        let mut b = Backoff::new(RetryPolicy::default());
        for attempt in 0..20 {
            let d = b.next_delay().unwrap();
            assert!(d <= RetryPolicy::default().delay(attempt, 1.0));
        }
    }
}
