//! The terms of the operator's Leases and when one may be taken: shared by
//! the migrations' Leases and the endpoints' slots. Pure.

use k8s_openapi::api::coordination::v1::Lease;
use std::time::Duration;

/// How long a Lease lasts without renewal, and how long before expiry it is renewed.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTerms {
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

impl LeaseTerms {
    /// How often a holder renews: `grace` before the Lease would lapse.
    pub fn renew_every(&self) -> Duration {
        Duration::from_secs(self.duration_seconds.saturating_sub(self.grace_seconds).max(1))
    }

    /// How long a holder counts its Lease held after sending the last write
    /// that the API server accepted: half the grace short of the duration,
    /// so that it stops before any other replica (whose clock may run a
    /// little ahead) sees the Lease lapse, yet leaves a renewal time to answer.
    pub fn held_for(&self) -> Duration {
        let grace = Duration::from_secs(self.grace_seconds.min(self.duration_seconds)) / 2;
        Duration::from_secs(self.duration_seconds) - grace
    }
}

/// Whether a Lease can be taken now: it has no holder, its holder let it
/// lapse, or its holder is `identity`.
pub fn takeable(lease: Option<&Lease>, identity: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.is_none_or(|at| at + jiff::SignedDuration::from_secs(lasts) < now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_renews_grace_before_the_lease_lapses_and_never_constantly() {
        assert_eq!(LeaseTerms { duration_seconds: 15, grace_seconds: 5 }.renew_every(), Duration::from_secs(10));
        assert_eq!(LeaseTerms { duration_seconds: 2, grace_seconds: 5 }.renew_every(), Duration::from_secs(1));
    }

    #[test]
    fn a_holder_stops_counting_on_its_lease_halfway_through_the_grace() {
        let terms = LeaseTerms { duration_seconds: 15, grace_seconds: 5 };
        assert_eq!(terms.held_for(), Duration::from_millis(12_500));
        assert!(terms.held_for() > terms.renew_every(), "a renewal has time to be answered");
        let short = LeaseTerms { duration_seconds: 6, grace_seconds: 2 };
        assert_eq!(short.held_for(), Duration::from_secs(5));
        assert_eq!(LeaseTerms { duration_seconds: 2, grace_seconds: 5 }.held_for(), Duration::from_secs(1));
    }
}
