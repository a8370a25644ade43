//! Screen lock and suspend as triggers, against a real dbus-daemon with a
//! system-bus policy and a fake logind that owns `org.freedesktop.login1`
//! (`tests/dbus/`): a lock wipes the secrets of the locked session only, a
//! suspend wipes every secret, a look-alike from another connection wipes
//! nothing, and the guardian watches again once a missing bus appears.

use std::time::Duration;

use e2e::{
    FakeLogind, Guardian, Session, is_alive, scratch_dir, start_sleeping_holder, wait_until,
};
use serde_json::Value;

/// Two sessions with a secret each (`a` and `b`, value as name), known to
/// logind as "1" and "2", once
/// the guardian has asked logind which session each leader is in.
fn two_sessions(guardian: &Guardian, logind: &mut FakeLogind) -> (Session, Session) {
    let mut first = Session::start(guardian);
    let mut second = Session::start(guardian);
    logind.add_session("1", first.leader());
    logind.add_session("2", second.leader());
    for (session, name) in [(&mut first, "a"), (&mut second, "b")] {
        let (rc, _, err) = session.run(&format!("printf %s {name} | $NS put {name}"));
        assert_eq!(rc, 0, "{err}");
    }
    let asked = wait_until(Duration::from_secs(10), || {
        logind.was_asked_about(first.leader()) && logind.was_asked_about(second.leader())
    });
    assert!(asked, "the guardian did not ask logind about its leaders");
    (first, second)
}

fn watched(guardian: &Guardian) -> bool {
    guardian.status()["lock_watch_error"] == Value::Null
}

fn triggers(guardian: &Guardian, reason: &str) -> usize {
    guardian
        .audit_of("trigger")
        .iter()
        .filter(|record| record["reason"] == reason)
        .count()
}

#[test]
#[ignore = "end-to-end: needs root, a built guardian and dbus-daemon (cargo xtask test runs it)"]
fn a_lock_wipes_the_locked_sessions_secrets_only_and_a_look_alike_nothing() {
    let mut logind = FakeLogind::start("logind-lock");
    let guardian = Guardian::start_on_bus("lock", &logind.address(), "");
    assert!(wait_until(Duration::from_secs(10), || watched(&guardian)));
    let (mut first, mut second) = two_sessions(&guardian, &mut logind);
    let holder = start_sleeping_holder(&mut first, "a");
    // A look-alike, to the guardian and to everyone, from another connection.
    logind.impostor_lock("1");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        guardian.status()["secrets"],
        2,
        "a look-alike wiped something"
    );
    assert!(is_alive(holder));
    // A lock of a session with no secret of ours.
    logind.add_session("3", 1);
    logind.lock("3");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        guardian.status()["secrets"],
        2,
        "another session's lock wiped something"
    );
    // The real thing.
    logind.lock("1");
    assert!(
        wait_until(Duration::from_secs(5), || !is_alive(holder)),
        "the holder lives on"
    );
    assert!(wait_until(
        Duration::from_secs(5),
        || guardian.status()["secrets"] == 1
    ));
    let (rc, _, _) = first.run("$NS get a");
    assert_eq!(rc, 6, "the locked session's secret is still there");
    let (rc, out, err) = second.run("$NS get b");
    assert_eq!((rc, out.as_slice()), (0, b"b".as_slice()), "{err}");
    assert_eq!(triggers(&guardian, "session_locked"), 1);
}

#[test]
#[ignore = "end-to-end: needs root, a built guardian and dbus-daemon (cargo xtask test runs it)"]
fn a_suspend_wipes_every_secret_and_a_resume_nothing() {
    let mut logind = FakeLogind::start("logind-sleep");
    let guardian = Guardian::start_on_bus("sleep", &logind.address(), "");
    assert!(wait_until(Duration::from_secs(10), || watched(&guardian)));
    let (_first, _second) = two_sessions(&guardian, &mut logind);
    logind.prepare_for_sleep(false);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(guardian.status()["secrets"], 2, "a resume wiped something");
    logind.prepare_for_sleep(true);
    assert!(wait_until(
        Duration::from_secs(5),
        || guardian.status()["secrets"] == 0
    ));
    assert_eq!(triggers(&guardian, "suspend"), 1);
}

#[test]
#[ignore = "end-to-end: needs root, a built guardian and dbus-daemon (cargo xtask test runs it)"]
fn ignore_in_the_policy_keeps_the_secrets() {
    let mut logind = FakeLogind::start("logind-ignore");
    let policy = "on_lock = \"ignore\"\non_suspend = \"ignore\"\n";
    let guardian = Guardian::start_on_bus("ignore", &logind.address(), policy);
    assert!(wait_until(Duration::from_secs(10), || watched(&guardian)));
    let (_first, _second) = two_sessions(&guardian, &mut logind);
    logind.lock("1");
    logind.prepare_for_sleep(true);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(guardian.status()["secrets"], 2);
}

#[test]
#[ignore = "end-to-end: needs root, a built guardian and dbus-daemon (cargo xtask test runs it)"]
fn without_a_bus_status_says_why_and_the_guardian_watches_once_it_appears() {
    let dir = scratch_dir("late-bus");
    let guardian = Guardian::start_on_bus("late-bus", &FakeLogind::address_in(&dir), "");
    let status = guardian.status();
    let why = status["lock_watch_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!why.is_empty(), "{status}");
    let shown = String::from_utf8(guardian.cli(["status"]).stdout).unwrap();
    assert!(shown.contains("lock, suspend     not watched: "), "{shown}");
    assert_eq!(
        guardian.cli(["list"]).status.code(),
        Some(0),
        "the guardian works without it"
    );
    let mut logind = FakeLogind::start_in(dir);
    assert!(
        wait_until(Duration::from_secs(15), || watched(&guardian)),
        "it did not reconnect: {}",
        guardian.status()
    );
    let (_first, _second) = two_sessions(&guardian, &mut logind);
    logind.prepare_for_sleep(true);
    assert!(wait_until(
        Duration::from_secs(5),
        || guardian.status()["secrets"] == 0
    ));
}
