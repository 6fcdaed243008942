//! Crash points for the crash-and-resume tests: with
//! `IDENTITY_MIGRATOR_CRASH_AT=<point>[:<n>]` the process sends itself SIGKILL
//! the n-th time (default first) it passes `<point>`, exactly as if the node died
//! there. Unset in production; reading it costs one check per point.
//!
//! Points: `enter-<Phase>` (after the phase change is saved), `copy-batch`
//! (after a batch commits, before its checkpoint is saved), `verify-chunk`,
//! `capture-taken` (noted ids taken out of the change capture's log, not yet
//! re-synced),
//! `index-built`, `swap-renamed-out`, `swap-identity-restarted`, `swap-renamed-in`,
//! `swap-old-dropped`, `rollback-renamed-aside`, `change-made` (an in-place
//! statement of a TableMigration committed, its count not yet saved); a
//! SchemaMigration's `schema-ddl-committed` (its progress not yet recorded),
//! `schema-job-recorded` (a job id saved, not yet awaited) and
//! `schema-backfill-batch` (a batch committed with its cursor).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const ENV: &str = "IDENTITY_MIGRATOR_CRASH_AT";

struct Armed {
    point: String,
    nth: u64,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let (point, nth) = match spec.rsplit_once(':') {
                Some((p, n)) => (p.to_string(), n.parse().ok()?),
                None => (spec, 1),
            };
            Some(Armed { point, nth, seen: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Passes `point`; dies here when this is the armed point and pass.
pub fn hit(point: &str) {
    let Some(armed) = armed() else { return };
    if armed.point != point {
        return;
    }
    if armed.seen.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth {
        eprintln!("crash point {point} reached: killing the process");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
