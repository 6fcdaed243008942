//! The operator's licence to change the database for one migration: its
//! Lease, held until an instant that each accepted renewal moves on. The
//! engine reads the deadline itself before every change, so a renewal task
//! that died, stalled or was starved cannot leave an engine running on a
//! Lease that has lapsed in the other replicas' eyes.

use std::time::Instant;

use tokio::sync::watch;

/// Held until the instant inside; None once the holder knows it lost it.
pub type HeldUntil = Option<Instant>;

#[derive(Clone, Debug)]
pub struct Licence(watch::Receiver<HeldUntil>);

impl Licence {
    pub fn new(until: watch::Receiver<HeldUntil>) -> Self {
        Self(until)
    }

    /// A licence that a test controls: held until the sender says otherwise.
    pub fn channel(until: HeldUntil) -> (watch::Sender<HeldUntil>, Self) {
        let (tx, rx) = watch::channel(until);
        (tx, Self(rx))
    }

    /// Whether the licence holds now: not given up, and its deadline ahead.
    pub fn holds(&self) -> bool {
        holds_at(*self.0.borrow(), Instant::now())
    }

    /// The deadline, while not given up.
    pub fn until(&self) -> HeldUntil {
        *self.0.borrow()
    }
}

/// Whether a licence held until `until` holds at `now`. Pure.
pub fn holds_at(until: HeldUntil, now: Instant) -> bool {
    until.is_some_and(|until| now < until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_licence_holds_only_before_its_deadline_and_never_once_given_up() {
        let now = Instant::now();
        assert!(holds_at(Some(now + Duration::from_secs(1)), now));
        assert!(!holds_at(Some(now), now), "the deadline itself is too late");
        assert!(!holds_at(Some(now - Duration::from_millis(1)), now), "no renewal moved it on: lapsed");
        assert!(!holds_at(None, now));
    }

    #[test]
    fn a_licence_that_nobody_renews_runs_out_by_itself() {
        // The sender stays alive but silent, as a renewal task that hangs.
        let (_silent, licence) = Licence::channel(Some(Instant::now() + Duration::from_millis(20)));
        assert!(licence.holds());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!licence.holds(), "the engine sees the deadline pass without any message");
    }
}
