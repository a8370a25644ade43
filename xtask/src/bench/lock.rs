//! Screen lock to secret wiped: the fake logind (`tests/dbus/`) on a private
//! system bus sends `Session.Lock` for a session holding one secret, and the
//! guardian's trigger record says when it had it and when the secret was
//! wiped. Beside it, for comparison: when a Python subscriber of the fake's
//! own, on a connection of its own, received the same signal (D-Bus's part,
//! with that client's overhead).

use std::time::Duration;

use anyhow::{Context, bail};
use e2e::{FakeLogind, Guardian, Session, wait_until};

/// One lock, in ns from the signal sent: to a Python subscriber having it,
/// to the guardian having it, to the secret wiped.
pub struct LockSample {
    pub to_subscriber: u64,
    pub to_guardian: u64,
    pub to_wiped: u64,
}

/// `runs` locks of a fresh session each, against one guardian.
pub fn locks(runs: usize) -> anyhow::Result<Vec<LockSample>> {
    let mut logind = FakeLogind::start("bench-lock");
    let guardian = Guardian::start_on_bus("bench-lock", &logind.address(), "");
    let watched = || guardian.status()["lock_watch_error"].is_null();
    if !wait_until(Duration::from_secs(10), watched) {
        bail!(
            "the guardian does not watch the fake logind: {}",
            guardian.status()
        );
    }
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let mut session = Session::start(&guardian);
        let id = (run + 1).to_string();
        logind.add_session(&id, session.leader());
        let (rc, _, err) = session.run("printf %s s3cret | $NS put tok");
        if rc != 0 {
            bail!("put failed: {err}");
        }
        if !wait_until(Duration::from_secs(5), || {
            logind.was_asked_about(session.leader())
        }) {
            bail!("the guardian did not ask logind about the session");
        }
        let (emitted, received) = logind.lock_timed(&id);
        let wiped = || {
            guardian
                .audit_of("trigger")
                .into_iter()
                .filter(|record| record["reason"] == "session_locked")
                .nth(run)
        };
        let mut record = None;
        wait_until(Duration::from_secs(5), || {
            record = wiped();
            record.is_some()
        });
        let record = record.context("no trigger record for the lock")?;
        let latency = &record["latency"];
        let start = latency["start_ns"].as_u64().context("no start_ns")?;
        let to_wiped = latency["wiped_ns"].as_u64().context("no wiped_ns")?;
        samples.push(LockSample {
            to_subscriber: received.saturating_sub(emitted),
            to_guardian: start.saturating_sub(emitted),
            to_wiped: (start + to_wiped).saturating_sub(emitted),
        });
    }
    Ok(samples)
}
