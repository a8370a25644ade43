//! Binding a secret: leaders that may be bound to, policy limits, the budget.

use super::*;

#[test]
fn put_binds_to_the_callers_session_leader_and_watches_it() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let shell = h.member(leader);
    assert_eq!(h.stored(shell, "tok"), leader);
    let world = h.world.lock();
    assert!(world.kernel.leaders.contains(&leader));
    assert!(world.kernel.armed, "tamper programs armed before storing");
}

#[test]
fn put_from_session_zero_must_name_a_leader() {
    let mut h = Harness::new();
    let daemon = h.spawn(ALICE, 1, 0);
    let err = h.put(daemon, "tok", None).unwrap_err();
    assert!(matches!(err, RequestError::NoSession), "{err:?}");
    assert!(!h.holds_secret(ALICE, "tok"));
}

#[test]
fn put_refuses_leaders_that_never_exit_or_are_not_a_users_process() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let dead = h.leader(ALICE);
    h.exit(dead);
    let thread = h.leader(ALICE);
    h.world.lock().procs.get_mut(&thread).unwrap().tgid = leader;
    let kthread = h.spawn(0, 2, 0);
    h.world
        .lock()
        .procs
        .get_mut(&kthread)
        .unwrap()
        .kernel_thread = true;
    let bobs = h.leader(BOB);
    type Expected = fn(&RequestError) -> bool;
    let cases: [(i32, Expected); 6] = [
        (1, |e| matches!(e, RequestError::BindInit)),
        (GUARDIAN, |e| matches!(e, RequestError::BindGuardian)),
        (dead, |e| matches!(e, RequestError::NoSuchProcess(_))),
        (thread, |e| matches!(e, RequestError::Thread { .. })),
        (kthread, |e| matches!(e, RequestError::KernelThread(_))),
        (bobs, |e| matches!(e, RequestError::OtherUser(_))),
    ];
    for (bind, expected) in cases {
        let err = h.put(leader, "tok", Some(bind)).unwrap_err();
        assert!(expected(&err), "bind {bind}: {err:?}");
    }
    assert!(h.core.vault.is_empty());
    assert!(h.core.sessions.leaders.is_empty(), "nothing watched");
}

#[test]
fn root_may_bind_to_another_users_process() {
    let mut h = Harness::new();
    let roots = h.leader(0);
    let bobs = h.leader(BOB);
    assert!(h.put(roots, "tok", Some(bobs)).is_ok());
}

#[test]
fn put_enforces_the_policy_limits() {
    let config = Config {
        max_secret_bytes: 4,
        max_secrets_per_uid: 1,
        max_ttl: Some(Duration::from_secs(3600)),
        ..Config::default()
    };
    let mut h = Harness::with(Parts::ALL, config);
    let leader = h.leader(ALICE);
    let small = Some(bytes(b"abc"));
    let shell = leader;
    let leader = h.member(shell);
    let err = h.put(leader, "big", None).unwrap_err();
    assert!(
        matches!(err, RequestError::TooLarge { limit: 4 }),
        "{err:?}"
    );
    let long = put_request("ttl", None, Some(7200));
    let err = h.try_request(leader, long, small).unwrap_err();
    assert!(matches!(err, RequestError::Ttl(_)), "{err:?}");
    let ok = h.try_request(leader, put_request("one", None, None), Some(bytes(b"abc")));
    assert!(ok.is_ok());
    let again = h.try_request(leader, put_request("one", None, None), Some(bytes(b"abc")));
    assert!(matches!(again.unwrap_err(), RequestError::Exists(_)));
    let second = h.try_request(leader, put_request("two", None, None), Some(bytes(b"abc")));
    assert!(matches!(
        second.unwrap_err(),
        RequestError::TooManySecrets { limit: 1 }
    ));
    let missing = h.try_request(leader, put_request("three", None, None), None);
    assert!(matches!(missing.unwrap_err(), RequestError::MissingPayload));
}

#[test]
fn nothing_is_stored_when_tamper_protection_cannot_be_armed() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    h.world.lock().kernel.fail_arm = true;
    let err = h.put(leader, "tok", None).unwrap_err();
    assert!(matches!(err, RequestError::Arm(_)), "{err:?}");
    assert!(h.core.vault.is_empty());
}

#[test]
fn one_user_cannot_lock_more_than_its_budget_and_gets_it_back_on_wipe() {
    let config = Config {
        max_locked_bytes_per_uid: 14,
        max_secret_bytes: 7,
        ..Config::default()
    };
    let mut h = Harness::with(Parts::ALL, config);
    let (alice, bob) = (h.leader(ALICE), h.leader(BOB));
    h.stored(alice, "six");
    h.stored(alice, "more");
    let err = h.put(alice, "third", None).unwrap_err();
    assert!(matches!(err, RequestError::OverBudget(_)), "{err:?}");
    h.stored(bob, "bobs");
    // A copy in a reply counts while it exists: 6 + 6 stored + 6 copied > 14.
    let err = h.get(alice, "six").unwrap_err();
    assert!(matches!(err, RequestError::OverBudget(_)), "{err:?}");
    h.revoke(alice, "more");
    assert_eq!(h.core.budget.used(Uid(ALICE)), 6);
    assert!(h.get(alice, "six").is_ok());
    h.revoke(alice, "six");
    assert_eq!(h.core.budget.used(Uid(ALICE)), 0);
}

#[test]
fn a_reply_copy_is_charged_until_the_reply_is_dropped() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let reply = h.try_request(leader, get_request("tok"), None).unwrap();
    assert_eq!(h.core.budget.used(Uid(ALICE)), 12);
    drop(reply);
    assert_eq!(h.core.budget.used(Uid(ALICE)), 6);
}

#[test]
fn an_exec_cannot_ask_for_more_than_one_reply_carries() {
    let config = Config {
        max_locked_bytes_per_uid: 64 << 20,
        ..Config::default()
    };
    let mut h = Harness::with(Parts::ALL, config);
    let shell = h.leader(ALICE);
    let leader = h.member(shell);
    let count = MAX_REPLY_BYTES / MAX_SECRET + 1;
    let names: Vec<String> = (0..count).map(|n| format!("big{n}")).collect();
    for secret in &names {
        let put = put_request(secret, None, None);
        let payload = SecretBuf::new(MAX_SECRET).unwrap();
        h.try_request(leader, put, Some(payload)).unwrap();
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let err = h
        .try_request(leader, exec_request(&names), None)
        .unwrap_err();
    assert!(matches!(err, RequestError::ReplyTooLarge { .. }), "{err:?}");
    assert!(h.core.sessions.holders.is_empty(), "nothing handed out");
}

#[test]
fn bind_names_a_pid_as_the_caller_sees_it_in_its_pid_namespace() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let caller = h.member(leader);
    h.world.lock().local_pids.insert((caller, 7), leader);
    let put = |name, bind| (put_request(name, Some(bind), None), Some(bytes(b"s3cret")));
    let (request, payload) = put("tok", 7);
    let reply = h.try_request(caller, request, payload).unwrap();
    assert!(
        matches!(reply.response, Response::Stored { leader: bound, .. } if bound == leader),
        "{reply:?}"
    );
    let (request, payload) = put("other", 8);
    let err = h.try_request(caller, request, payload).unwrap_err();
    assert!(
        matches!(err, RequestError::NoSuchProcess(pid) if pid.raw() == 8),
        "{err:?}"
    );
}

#[test]
fn a_put_that_leads_its_own_session_is_refused_but_one_naming_itself_is_not() {
    let mut h = Harness::new();
    // `setsid ningen-shikkaku put`: the client leads its own session.
    let lone = h.leader(ALICE);
    let request = put_request("tok", None, None);
    let err = h
        .try_request(lone, request, Some(bytes(b"s3cret")))
        .unwrap_err();
    assert!(matches!(err, RequestError::BindCaller(_)), "{err:?}");
    assert!(err.to_string().contains("--bind $$"), "{err}");
    assert!(h.core.vault.is_empty());
    // A process that names itself means to live on (a long-lived client).
    let shell = h.leader(ALICE);
    let client = h.member(shell);
    let request = put_request("tok", Some(client), None);
    let reply = h.try_request(client, request, Some(bytes(b"s3cret")));
    assert!(reply.is_ok(), "{:?}", reply.err());
}
