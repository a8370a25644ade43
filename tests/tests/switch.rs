//! The switch itself: leader death or hangup, revoke and TTL wipe secrets and
//! kill every holder, including ones that forked, double-forked and setsid'd.

use std::{fs, time::Duration};

use e2e::{Guardian, Session, escaping_holder, is_alive, send_signal, wait_until};
use nix::sys::signal::Signal;

const SECRET: &str = "s3cr3t value\twith spaces";

/// Puts `name` in the session and starts an escaping holder with it; waits
/// until the holder, its child and its setsid grandchild have reported in.
fn start_holder(session: &mut Session, name: &str, file: &str) -> Vec<i32> {
    let holder = escaping_holder(file, "T");
    session.spawn(&format!("$NS exec --env T={name} -- {holder}"));
    let reported = wait_until(Duration::from_secs(10), || session.pids_in(file).len() == 3);
    assert!(
        reported,
        "holder tree did not start: {:?}",
        session.pids_in(file)
    );
    let received = fs::read(session.dir().join(format!("{file}.secret"))).unwrap();
    assert_eq!(received, SECRET.as_bytes(), "holder got the wrong bytes");
    session.pids_in(file)
}

fn put(session: &mut Session, name: &str, extra: &str) {
    let (rc, _, err) = session.run(&format!("printf %s '{SECRET}' | $NS put {name} {extra}"));
    assert_eq!(rc, 0, "put {name} failed: {err}");
}

fn assert_all_dead_within_a_second(pids: &[i32]) {
    let dead = wait_until(Duration::from_secs(1), || {
        pids.iter().all(|&pid| !is_alive(pid))
    });
    let alive: Vec<_> = pids.iter().filter(|&&pid| is_alive(pid)).collect();
    assert!(
        dead,
        "holders still alive a second after the trigger: {alive:?}"
    );
}

fn assert_trigger_audited(guardian: &Guardian, cause: &str, names: &[&str], holders: usize) {
    let found = wait_until(Duration::from_secs(5), || {
        guardian
            .audit_of("trigger")
            .iter()
            .any(|r| r["reason"] == cause)
    });
    assert!(
        found,
        "no {cause} trigger in the audit log: {:?}",
        guardian.audit_records()
    );
    let record = guardian
        .audit_of("trigger")
        .into_iter()
        .find(|r| r["reason"] == cause)
        .unwrap();
    assert_eq!(record["names"], serde_json::json!(names));
    assert_eq!(record["outcome"], "wiped");
    let latency = &record["latency"];
    assert!(latency["wiped_ns"].as_u64().unwrap() > 0, "{record}");
    assert!(latency["holders_dead_ns"].as_u64().unwrap() >= latency["wiped_ns"].as_u64().unwrap());
    assert!(
        latency["holders"].as_u64().unwrap() >= holders as u64,
        "{record}"
    );
}

fn leader_signal_wipes_and_kills_the_whole_tree(signal: Signal, cause: &str) {
    let guardian = Guardian::start(cause);
    let status = guardian.status();
    assert_eq!(
        status["watch_mode"], "ebpf-tracepoints",
        "eBPF did not load: {status}"
    );
    wipes_and_kills_the_whole_tree(&guardian, signal, cause);
}

fn wipes_and_kills_the_whole_tree(guardian: &Guardian, signal: Signal, cause: &str) {
    let mut session = Session::start(guardian);
    put(&mut session, "tok", "");
    let pids = start_holder(&mut session, "tok", "pids");
    // eBPF knows every fork at once; the fallback finds forked holders only
    // when it scans, at the trigger.
    let status = guardian.status();
    let known = status["holders"].as_u64().unwrap();
    match status["fork_tracking"].as_str() {
        Some("ebpf") => assert_eq!(known, 3, "{status}"),
        _ => assert!(known >= 1, "{status}"),
    }

    session.signal_leader(signal);
    assert_all_dead_within_a_second(&pids);
    let output = guardian.cli(["get", "tok"]);
    assert!(!output.status.success());
    assert!(
        e2e::stderr(&output).contains("no such secret"),
        "{}",
        e2e::stderr(&output)
    );
    assert_trigger_audited(guardian, cause, &["tok"], known as usize);
    assert_eq!(guardian.status()["secrets"], 0);
    // Every exit was seen: no holder is left on the books.
    let cleared = wait_until(Duration::from_secs(2), || guardian.status()["holders"] == 0);
    assert!(cleared, "{}", guardian.status());
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn sigkill_of_the_leader_wipes_and_kills_forked_and_setsid_holders() {
    leader_signal_wipes_and_kills_the_whole_tree(Signal::SIGKILL, "leader_exit");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn without_ebpf_the_pidfd_fallback_wipes_and_kills_the_whole_tree() {
    let guardian = Guardian::start_without_ebpf("no-ebpf");
    assert_eq!(guardian.status()["watch_mode"], "pidfd-fallback");
    wipes_and_kills_the_whole_tree(&guardian, Signal::SIGKILL, "leader_exit");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn sighup_of_the_leader_wipes_and_kills_forked_and_setsid_holders() {
    leader_signal_wipes_and_kills_the_whole_tree(Signal::SIGHUP, "leader_hangup");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn revoke_wipes_one_secret_and_kills_only_its_holders() {
    let guardian = Guardian::start("revoke");
    let mut session = Session::start(&guardian);
    put(&mut session, "a", "");
    put(&mut session, "b", "");
    let holders_of_a = start_holder(&mut session, "a", "pids-a");
    let holders_of_b = start_holder(&mut session, "b", "pids-b");

    let (rc, _, err) = session.run("$NS revoke a");
    assert_eq!(rc, 0, "{err}");
    assert_all_dead_within_a_second(&holders_of_a);
    assert!(
        holders_of_b.iter().all(|&pid| is_alive(pid)),
        "b's holders were killed too"
    );
    let (rc, out, _) = session.run("$NS get b");
    assert_eq!((rc, out.as_slice()), (0, SECRET.as_bytes()));
    let (rc, _, err) = session.run("$NS get a");
    assert_ne!(rc, 0);
    assert!(err.contains("no such secret"), "{err}");
    assert_trigger_audited(&guardian, "revoke", &["a"], 3);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn ttl_expiry_wipes_one_secret_and_kills_only_its_holders() {
    let guardian = Guardian::start("ttl");
    let mut session = Session::start(&guardian);
    put(&mut session, "short", "--ttl 2s");
    put(&mut session, "long", "");
    let holders_of_short = start_holder(&mut session, "short", "pids-short");
    let holders_of_long = start_holder(&mut session, "long", "pids-long");
    let (rc, out, _) = session.run("$NS list --json");
    assert_eq!(rc, 0);
    let list: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let short = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "short")
        .unwrap()
        .clone();
    assert!(short["ttl_left_secs"].as_u64().unwrap() <= 2, "{short}");

    let expired = wait_until(Duration::from_secs(5), || {
        holders_of_short.iter().all(|&p| !is_alive(p))
    });
    assert!(expired, "TTL did not kill the holders of short");
    assert!(
        holders_of_long.iter().all(|&pid| is_alive(pid)),
        "long's holders were killed too"
    );
    let (rc, out, _) = session.run("$NS get long");
    assert_eq!((rc, out.as_slice()), (0, SECRET.as_bytes()));
    let (rc, _, _) = session.run("$NS get short");
    assert_ne!(rc, 0);
    assert_trigger_audited(&guardian, "ttl_expired", &["short"], 3);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn stopping_the_guardian_wipes_everything_and_kills_every_holder() {
    let mut guardian = Guardian::start("stop");
    let mut session = Session::start(&guardian);
    put(&mut session, "tok", "");
    let pids = start_holder(&mut session, "tok", "pids");
    send_signal(guardian.pid(), Signal::SIGTERM);
    assert_all_dead_within_a_second(&pids);
    assert!(
        wait_until(Duration::from_secs(5), || !guardian.is_running()),
        "guardian did not stop"
    );
    assert_trigger_audited(&guardian, "shutdown", &["tok"], 3);
}
