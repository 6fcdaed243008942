//! The adaptive pace of the copy (`spec.copy.pace`): additive increase while
//! every threshold holds, halving when one is broken, within
//! `maxRowsPerSecond`. Pure: the copy reports its commits and the replica lag,
//! and asks for the pace once a second.

use std::collections::VecDeque;
use std::time::Duration;

/// The thresholds; each is optional.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PaceLimits {
    /// p95 of the copy's own commit latency, over the last commits.
    pub max_commit_latency: Option<Duration>,
    /// Retried conflicts (OCC) per commit, over the last commits.
    pub max_conflict_rate: Option<f64>,
    /// PostgreSQL streaming replicas' replay lag.
    pub max_replica_lag: Option<Duration>,
}

impl PaceLimits {
    pub fn any(&self) -> bool {
        self.max_commit_latency.is_some() || self.max_conflict_rate.is_some() || self.max_replica_lag.is_some()
    }
}

/// Commits looked at for the latency percentile and the conflict rate.
const WINDOW: usize = 32;
/// The pace never goes below this many rows per second.
pub const FLOOR: f64 = 50.0;

/// Why the pace is what it is (also the metric's label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::Display)]
pub enum PaceReason {
    /// Every threshold holds: the pace rises (or is unlimited).
    Clear,
    CommitLatency,
    Conflicts,
    ReplicaLag,
}

#[derive(Debug)]
pub struct Pacer {
    limits: PaceLimits,
    /// `maxRowsPerSecond`, when set.
    ceiling: Option<f64>,
    /// Rows per second allowed now; None while unlimited.
    rate: Option<f64>,
    latencies: VecDeque<Duration>,
    conflicts: VecDeque<u64>,
    /// Rows and commits since the last adjustment, and over how long (ticks
    /// without a commit add up: a batch may take longer than a tick).
    rows: i64,
    commits: usize,
    since: Duration,
    lag: Option<Duration>,
    reason: PaceReason,
    detail: String,
}

/// What one adjustment found.
#[derive(Clone, Debug, PartialEq)]
pub struct PaceChange {
    pub rate: Option<f64>,
    pub reason: PaceReason,
    /// The broken threshold, in words ("commit latency p95 240 ms > 100 ms").
    pub detail: String,
    /// The pace went from clear to throttled, or back: worth an Event.
    pub flipped: bool,
}

impl Pacer {
    pub fn new(limits: PaceLimits, ceiling: Option<u64>) -> Self {
        let ceiling = ceiling.map(|c| c.max(1) as f64);
        Self {
            limits,
            ceiling,
            rate: ceiling,
            latencies: VecDeque::new(),
            conflicts: VecDeque::new(),
            rows: 0,
            commits: 0,
            since: Duration::ZERO,
            lag: None,
            reason: PaceReason::Clear,
            detail: "every pace threshold holds".into(),
        }
    }

    /// One committed batch: its rows, its commit latency and the conflicts retried for it.
    pub fn record_commit(&mut self, rows: i64, latency: Duration, conflicts: u64) {
        self.rows += rows;
        self.commits += 1;
        self.latencies.push_back(latency);
        self.conflicts.push_back(conflicts);
        while self.latencies.len() > WINDOW {
            self.latencies.pop_front();
            self.conflicts.pop_front();
        }
    }

    pub fn record_lag(&mut self, lag: Duration) {
        self.lag = Some(lag);
    }

    fn p95(&self) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = self.latencies.iter().copied().collect();
        sorted.sort();
        let at = ((sorted.len() as f64) * 0.95).ceil() as usize;
        sorted.get(at.saturating_sub(1)).copied()
    }

    fn broken(&self) -> Option<(PaceReason, String)> {
        if let (Some(max), Some(p95)) = (self.limits.max_commit_latency, self.p95())
            && p95 > max
        {
            let detail = format!("commit latency p95 {} ms > {} ms", p95.as_millis(), max.as_millis());
            return Some((PaceReason::CommitLatency, detail));
        }
        if let Some(max) = self.limits.max_conflict_rate
            && !self.conflicts.is_empty()
        {
            let rate = self.conflicts.iter().sum::<u64>() as f64 / self.conflicts.len() as f64;
            if rate > max {
                return Some((PaceReason::Conflicts, format!("{rate:.2} conflicts per commit > {max}")));
            }
        }
        if let (Some(max), Some(lag)) = (self.limits.max_replica_lag, self.lag)
            && lag > max
        {
            let detail = format!("replica lag {:.1} s > {} s", lag.as_secs_f64(), max.as_secs());
            return Some((PaceReason::ReplicaLag, detail));
        }
        None
    }

    /// Adjusts the pace after `elapsed` since the last adjustment: halved
    /// when a threshold is broken, raised by a twentieth of the ceiling (or of
    /// the rate seen) when all hold.
    ///
    /// A tick without a commit holds the pace: it measured nothing (a batch
    /// that takes longer than a tick is not a pace of zero rows a second).
    pub fn adjust(&mut self, elapsed: Duration) -> PaceChange {
        self.since += elapsed;
        if self.commits == 0 {
            return PaceChange { rate: self.rate, reason: self.reason, detail: self.detail.clone(), flipped: false };
        }
        let seen = self.rows as f64 / self.since.as_secs_f64().max(0.001);
        (self.rows, self.commits, self.since) = (0, 0, Duration::ZERO);
        let was_clear = self.reason == PaceReason::Clear;
        match self.broken() {
            Some((reason, detail)) => {
                let base = self.rate.unwrap_or(seen).min(seen.max(FLOOR));
                self.rate = Some((base / 2.0).max(FLOOR));
                // Fresh measurements decide the next step, not the old ones.
                self.latencies.clear();
                self.conflicts.clear();
                self.reason = reason;
                self.detail = detail;
            }
            None => {
                if let Some(rate) = self.rate {
                    let step = (self.ceiling.unwrap_or(seen.max(rate)) / 20.0).max(FLOOR);
                    let raised = rate + step;
                    self.rate = match self.ceiling {
                        Some(ceiling) => Some(raised.min(ceiling)),
                        // Without a ceiling the pace is unlimited again once
                        // well above what the copy reaches.
                        None if raised > 2.0 * seen.max(FLOOR) => None,
                        None => Some(raised),
                    };
                }
                self.reason = PaceReason::Clear;
                self.detail = "every pace threshold holds".into();
            }
        }
        PaceChange {
            rate: self.rate,
            reason: self.reason,
            detail: self.detail.clone(),
            flipped: was_clear != (self.reason == PaceReason::Clear),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slow_commits_halve_the_pace_and_it_climbs_back_when_they_are_fast() {
        let limits = PaceLimits { max_commit_latency: Some(ms(100)), ..Default::default() };
        let mut p = Pacer::new(limits, Some(10_000));
        for _ in 0..10 {
            p.record_commit(500, ms(20), 0);
        }
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!((c.rate, c.reason, c.flipped), (Some(10_000.0), PaceReason::Clear, false));
        for _ in 0..10 {
            p.record_commit(500, ms(300), 0);
        }
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!((c.rate, c.reason, c.flipped), (Some(2_500.0), PaceReason::CommitLatency, true));
        assert!(c.detail.contains("p95 300 ms > 100 ms"), "{}", c.detail);
        for _ in 0..10 {
            p.record_commit(250, ms(20), 0);
        }
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!((c.rate, c.reason, c.flipped), (Some(3_000.0), PaceReason::Clear, true));
        p.record_commit(3_000, ms(20), 0);
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!(c.rate, Some(3_500.0), "additive increase");
        for _ in 0..40 {
            p.record_commit(3_000, ms(20), 0);
            p.adjust(Duration::from_secs(1));
        }
        assert_eq!(p.rate, Some(10_000.0), "never above maxRowsPerSecond");
    }

    #[test]
    fn conflicts_and_replica_lag_are_thresholds_too() {
        let limits = PaceLimits { max_conflict_rate: Some(0.5), ..Default::default() };
        let mut p = Pacer::new(limits, None);
        assert_eq!(p.rate, None, "unlimited without a ceiling");
        for _ in 0..4 {
            p.record_commit(1000, ms(10), 1);
        }
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!((c.rate, c.reason), (Some(2_000.0), PaceReason::Conflicts), "half of the 4,000 rows/s seen");
        let limits = PaceLimits { max_replica_lag: Some(Duration::from_secs(5)), ..Default::default() };
        let mut p = Pacer::new(limits, Some(1_000));
        p.record_lag(Duration::from_secs(12));
        p.record_commit(1000, ms(10), 0);
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!((c.rate, c.reason), (Some(500.0), PaceReason::ReplicaLag));
        let mut floor = Pacer::new(limits, Some(60));
        floor.record_lag(Duration::from_secs(12));
        floor.record_commit(60, ms(10), 0);
        assert_eq!(floor.adjust(Duration::from_secs(1)).rate, Some(FLOOR), "never below the floor");
    }

    #[test]
    fn a_tick_without_a_commit_holds_the_pace_and_slow_batches_are_measured_over_their_ticks() {
        let limits = PaceLimits { max_commit_latency: Some(ms(3_000)), ..Default::default() };
        let mut p = Pacer::new(limits, Some(10_000));
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!((c.rate, c.reason, c.flipped), (Some(10_000.0), PaceReason::Clear, false), "nothing measured");
        // Batches of 2,900 rows that take 2.5 s each: two empty ticks, then a commit.
        p.adjust(Duration::from_secs(1));
        p.adjust(Duration::from_secs(1));
        p.record_commit(2_900, ms(2_500), 0);
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!((c.rate, c.reason), (Some(10_000.0), PaceReason::Clear), "not dropped to the floor");
        // Broken: halved from what was seen over the three ticks, not from zero.
        let strict = PaceLimits { max_commit_latency: Some(ms(1_000)), ..Default::default() };
        let mut p = Pacer::new(strict, None);
        p.adjust(Duration::from_secs(1));
        p.adjust(Duration::from_secs(1));
        p.record_commit(3_000, ms(2_500), 0);
        let c = p.adjust(Duration::from_secs(1));
        assert_eq!((c.rate, c.reason), (Some(500.0), PaceReason::CommitLatency), "half of 1,000 rows/s");
    }
}
