//! Screen lock and suspend: a lock wipes the secrets bound to the leaders in
//! the locked session, a suspend every secret, unless the policy says
//! `ignore`; `status` says whether they are watched.

use super::*;
use crate::config::Response as OnSignal;

fn pid(raw: i32) -> Pid {
    Pid::new(raw).unwrap()
}

#[test]
fn a_lock_wipes_the_locked_leaders_secrets_and_a_suspend_all() {
    let mut h = Harness::new();
    let (locked, holder) = h.session_holding(ALICE);
    h.storing(BOB);
    h.send(Msg::SessionLocked {
        leaders: vec![pid(locked)],
        at_ns: 1,
    });
    assert!(!h.holds_secret(ALICE, "tok"));
    assert!(h.was_killed(holder));
    assert!(h.holds_secret(BOB, "tok"), "another session's secret went");
    h.settle();
    assert_eq!(h.last_trigger()["reason"], "session_locked");
    h.send(Msg::SessionLocked {
        leaders: Vec::new(),
        at_ns: 2,
    });
    assert!(
        h.holds_secret(BOB, "tok"),
        "a lock of no leader of ours wiped"
    );
    h.send(Msg::Suspending { at_ns: 3 });
    assert!(!h.holds_secret(BOB, "tok"));
    h.settle();
    assert_eq!(h.last_trigger()["reason"], "suspend");
}

#[test]
fn ignore_in_the_policy_keeps_the_secrets() {
    let config = Config {
        on_lock: OnSignal::Ignore,
        on_suspend: OnSignal::Ignore,
        ..Config::default()
    };
    let mut h = Harness::with(Parts::ALL, config);
    let leader = h.storing(ALICE);
    h.send(Msg::SessionLocked {
        leaders: vec![pid(leader)],
        at_ns: 1,
    });
    h.send(Msg::Suspending { at_ns: 2 });
    assert!(h.holds_secret(ALICE, "tok"));
}

#[test]
fn status_says_whether_lock_and_suspend_are_watched() {
    let mut h = Harness::new();
    assert!(
        h.status().lock_watch_error.is_some(),
        "watched before anyone said so"
    );
    h.send(Msg::LockWatch { error: None });
    assert_eq!(h.status().lock_watch_error, None);
    let _ = h.core.leaders_if_moved();
    let leader = h.storing(ALICE);
    assert_eq!(h.core.leaders(), [pid(leader)]);
    assert_eq!(h.core.leaders_if_moved(), Some(vec![pid(leader)]));
    assert_eq!(h.core.leaders_if_moved(), None, "nothing moved since");
    h.exit(leader);
    assert_eq!(h.core.leaders_if_moved(), Some(Vec::new()));
}
