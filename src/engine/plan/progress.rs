//! Progress arithmetic, the copy throttle and the status write gate. Time is
//! passed in, so everything here is pure and tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::api::Progress;

/// How far back the copy rate is measured: long enough to smooth batches,
/// short enough to follow a throttle change.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// At most one status write per this interval, except at phase changes.
pub const STATUS_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Rows per second over a sliding window.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: VecDeque<(Instant, i64)>,
}

impl RateMeter {
    /// Records the running total of rows at `now`.
    pub fn record(&mut self, now: Instant, total: i64) {
        self.samples.push_back((now, total));
        while let Some(&(t, _)) = self.samples.front() {
            if now.duration_since(t) > RATE_WINDOW && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    pub fn rows_per_second(&self) -> i64 {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return 0;
        };
        let secs = last.0.duration_since(first.0).as_secs_f64();
        if secs < 0.2 {
            return 0;
        }
        ((last.1 - first.1) as f64 / secs).round() as i64
    }
}

/// `21s`, `3m12s`, `1h02m`.
pub fn format_eta(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The progress block of the status. `done` is true once every range is copied:
/// only then is it 100%, however far the estimate was off.
pub fn progress(rows_copied: i64, rows_total: i64, rows_per_second: i64, rows_recopied: i64, done: bool) -> Progress {
    let total = rows_total.max(rows_copied).max(0);
    let percent = if done {
        100
    } else if total == 0 {
        0
    } else {
        (rows_copied * 100 / total).min(99)
    };
    let eta = if done {
        Some(format_eta(0))
    } else if rows_per_second > 0 {
        let left = (total - rows_copied).max(0);
        Some(format_eta((left + rows_per_second - 1) / rows_per_second))
    } else {
        None
    };
    Progress {
        rows_copied,
        rows_total: total,
        percent,
        rows_per_second,
        eta,
        rows_recopied,
        batches: 0,
        largest_batch: 0,
        pace: None,
    }
}

/// Token bucket for `maxRowsPerSecond`, shared by every worker. A batch asks
/// for its rows before it runs and waits as long as the bucket says.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    /// Rows that may go now; negative when batches are borrowed ahead.
    tokens: f64,
    at: Instant,
}

impl Throttle {
    pub fn new(rows_per_second: u64, now: Instant) -> Self {
        let rate = rows_per_second.max(1) as f64;
        // One second of burst: a batch never waits at the start.
        Self { rate, tokens: rate, at: now }
    }

    /// Changes the rate (the adaptive pace); the burst follows it.
    pub fn set_rate(&mut self, rows_per_second: f64) {
        self.rate = rows_per_second.max(1.0);
        self.tokens = self.tokens.min(self.rate);
    }

    /// Takes `rows` and returns how long to wait before using them.
    pub fn reserve(&mut self, rows: i64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        self.tokens -= rows as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

/// Decides when the status is written: always when forced (phase change,
/// end), otherwise at most once per interval.
#[derive(Debug)]
pub struct WriteGate {
    interval: Duration,
    last: Option<Instant>,
}

impl WriteGate {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: None }
    }

    pub fn should_write(&mut self, now: Instant, force: bool) -> bool {
        let due = match self.last {
            None => true,
            Some(last) => now.duration_since(last) >= self.interval,
        };
        if force || due {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_measured_over_the_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.rows_per_second(), 0);
        m.record(t0, 0);
        m.record(t0 + Duration::from_secs(1), 10_000);
        m.record(t0 + Duration::from_secs(2), 20_000);
        assert_eq!(m.rows_per_second(), 10_000);
        // Old samples fall out: the rate follows the recent pace.
        m.record(t0 + Duration::from_secs(30), 20_000 + 28 * 1000);
        m.record(t0 + Duration::from_secs(31), 20_000 + 29 * 1000);
        assert_eq!(m.rows_per_second(), 1000);
    }

    #[test]
    fn eta_reads_like_a_duration() {
        assert_eq!(format_eta(21), "21s");
        assert_eq!(format_eta(192), "3m12s");
        assert_eq!(format_eta(3720), "1h02m");
        assert_eq!(format_eta(-5), "0s");
    }

    #[test]
    fn percent_is_never_100_before_the_end_and_eta_follows_the_rate() {
        let p = progress(131_072, 1_000_000, 41_000, 0, false);
        assert_eq!(p.percent, 13);
        assert_eq!(p.eta.as_deref(), Some("22s"));
        let over = progress(1_200_000, 1_000_000, 41_000, 0, false);
        assert_eq!(over.percent, 99, "estimate too low");
        assert_eq!(over.rows_total, 1_200_000);
        let done = progress(999_000, 1_000_000, 0, 7, true);
        assert_eq!(done.percent, 100);
        assert_eq!(done.rows_recopied, 7);
        assert_eq!(progress(0, 0, 0, 0, false).eta, None);
    }

    #[test]
    fn throttle_paces_rows_to_the_rate() {
        let t0 = Instant::now();
        let mut t = Throttle::new(1000, t0);
        assert_eq!(t.reserve(1000, t0), Duration::ZERO, "one second of burst");
        assert_eq!(t.reserve(500, t0), Duration::from_millis(500));
        // Half a second later the debt is paid.
        assert_eq!(t.reserve(0, t0 + Duration::from_millis(500)), Duration::ZERO);
        // A long pause does not bank more than one second.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(t.reserve(1000, later), Duration::ZERO);
        assert_eq!(t.reserve(1000, later), Duration::from_secs(1));
    }

    #[test]
    fn status_writes_are_bounded_except_when_forced() {
        let t0 = Instant::now();
        let mut g = WriteGate::new(Duration::from_secs(1));
        assert!(g.should_write(t0, false));
        assert!(!g.should_write(t0 + Duration::from_millis(300), false));
        assert!(g.should_write(t0 + Duration::from_millis(400), true));
        assert!(!g.should_write(t0 + Duration::from_millis(1300), false));
        assert!(g.should_write(t0 + Duration::from_millis(1400), false));
    }
}
