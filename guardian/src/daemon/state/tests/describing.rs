//! Describing: list and status.

use super::*;

#[test]
fn list_shows_only_the_callers_secrets_with_holders_and_ttl() {
    let mut h = Harness::new();
    let (alice, bob) = (h.leader(ALICE), h.leader(BOB));
    h.stored_for(alice, "b-ttl", 100);
    h.stored(alice, "a");
    h.stored(bob, "bobs");
    let holder = h.member(alice);
    h.holds(holder, &["a"]);
    h.advance(Duration::from_secs(30));
    let reply = h
        .try_request(alice, Request::List { all: false }, None)
        .unwrap();
    let Response::List { secrets } = reply.response else {
        panic!("not a list");
    };
    let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b-ttl"]);
    assert_eq!(secrets[0].holders, 1);
    assert_eq!(secrets[0].ttl_left_secs, None);
    assert_eq!(secrets[1].ttl_left_secs, Some(70));
    assert_eq!(secrets[1].age_secs, 30);
}

#[test]
fn status_names_the_mechanisms_in_force() {
    let mut full = Harness::new();
    let status = full.status();
    assert_eq!(status.watch_mode, WatchMode::EbpfTracepoints);
    assert_eq!(status.fork_tracking, ForkTracking::Ebpf);
    assert_eq!(status.containment, Containment::Cgroup);
    assert_eq!(status.fail_closed, FailClosed::Supervisor);
    assert_eq!(status.tamper_protection, TamperProtection::EbpfTracepoints);
    assert!(status.lsm_error.is_some());
    let mut bare = Harness::with(Parts::NONE, Config::default());
    let status = bare.status();
    assert_eq!(status.watch_mode, WatchMode::PidfdFallback);
    assert_eq!(status.fork_tracking, ForkTracking::ProcScan);
    assert_eq!(status.containment, Containment::Pidfd);
    assert_eq!(status.fail_closed, FailClosed::None);
    assert_eq!(status.tamper_protection, TamperProtection::None);
    assert_eq!(status.ebpf_error.as_deref(), Some("eBPF switched off"));
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(
        json["watch_mode"], "pidfd-fallback",
        "the wire format is unchanged"
    );
}

#[test]
fn tamper_protection_is_disarmed_once_nothing_is_left_to_protect() {
    let mut h = Harness::new();
    let (leader, _) = h.session_holding(ALICE);
    h.revoke(leader, "tok");
    assert!(h.world.lock().kernel.armed, "a holder still lives");
    h.settle();
    assert!(
        h.world.lock().kernel.armed,
        "the session that held the secret is guarded until its leader exits"
    );
    h.exit(leader);
    h.settle();
    assert!(!h.world.lock().kernel.armed);
    assert!(!h.status().tamper_armed);
}

#[test]
fn another_user_s_status_counts_only_its_own_secrets_leaders_and_holders() {
    let mut h = Harness::new();
    h.session_holding(ALICE);
    let alice_too = h.leader(ALICE);
    h.stored(alice_too, "more");
    h.stored(alice_too, "most");
    let bob = h.storing(BOB);
    let mine = match h
        .try_request(bob, Request::Status {}, None)
        .unwrap()
        .response
    {
        Response::Status(status) => *status,
        other => panic!("not a status: {other:?}"),
    };
    assert_eq!((mine.secrets, mine.leaders, mine.holders), (1, 1, 0));
    assert_eq!(mine.locked_bytes, b"s3cret".len(), "only bob's bytes");
    assert_eq!(
        mine.audit_flushes, None,
        "the machine's request rate is root's"
    );
    let all = h.status();
    assert_eq!((all.secrets, all.leaders, all.holders), (4, 3, 1));
}

#[test]
fn root_s_status_says_how_many_answers_each_flush_released() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let client = h.member(leader);
    h.ask(
        client,
        put_request("tok", None, None),
        Some(bytes(b"s3cret")),
    );
    // Requests that arrive before one commit share its flush.
    let answers = h.ask_together(vec![(client, get_request("tok")); 3]);
    assert!(answers.iter().all(|reply| reply.secrets.len() == 1));
    let flushes = h.status().audit_flushes.expect("root sees them");
    assert_eq!((flushes.flushes, flushes.answers), (2, 4));
}
