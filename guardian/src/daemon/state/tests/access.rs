//! Access: who may get a secret, from where.

use super::*;

#[test]
fn a_process_of_the_session_gets_the_exact_bytes() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let other_member = h.member(leader);
    assert_eq!(h.get(other_member, "tok").unwrap(), b"s3cret");
}

#[test]
fn a_descendant_of_the_leader_in_a_new_session_may_use_it() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let setsid_child = h.spawn(ALICE, leader, -1);
    assert!(h.get(setsid_child, "tok").is_ok());
}

#[test]
fn the_same_user_in_another_session_is_refused() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let elsewhere = h.leader(ALICE);
    let err = h.get(elsewhere, "tok").unwrap_err();
    assert!(
        matches!(err, RequestError::OutsideSession { leader: l, .. } if l.raw() == leader),
        "{err:?}"
    );
}

#[test]
fn another_user_never_learns_of_the_secret_even_inside_the_session() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let sid = leader;
    let bob_inside = h.spawn(BOB, leader, sid);
    let err = h.get(bob_inside, "tok").unwrap_err();
    assert!(matches!(err, RequestError::NoSuchSecret(_)), "{err:?}");
}

#[test]
fn a_traced_caller_is_refused() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let traced = h.member(leader);
    h.world.lock().procs.get_mut(&traced).unwrap().tracer = 4242;
    let err = h.get(traced, "tok").unwrap_err();
    assert!(matches!(err, RequestError::Traced(4242)), "{err:?}");
}

#[test]
fn a_leader_in_session_zero_is_matched_by_descent_only() {
    let mut h = Harness::new();
    let service = h.spawn(ALICE, 1, 0);
    let runner = h.spawn(ALICE, service, 0);
    assert!(h.put(runner, "tok", Some(service)).is_ok());
    let sibling = h.spawn(ALICE, 1, 0);
    let err = h.put(sibling, "other", Some(service)).unwrap_err();
    assert!(
        matches!(err, RequestError::BindOutsideSession(_)),
        "{err:?}"
    );
    let child = h.spawn(ALICE, service, 0);
    assert!(h.get(child, "tok").is_ok());
    let unrelated = h.spawn(ALICE, 1, 0);
    let err = h.get(unrelated, "tok").unwrap_err();
    assert!(
        matches!(err, RequestError::OutsideSession { .. }),
        "two processes in session 0 share no session: {err:?}"
    );
}

#[test]
fn a_caller_that_exited_is_refused() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let gone = h.member(leader);
    let peer = h.peer(gone);
    h.exit(gone);
    let err = h
        .core
        .carry_out(&peer, exec_request(&["tok"]), None)
        .err()
        .unwrap();
    assert!(matches!(err, RequestError::CallerExited), "{err:?}");
    assert!(h.core.sessions.holders.is_empty());
}

#[test]
fn only_a_member_of_a_session_or_root_may_bind_a_secret_to_it() {
    let mut h = Harness::new();
    let victim = h.leader(ALICE);
    let outsider = h.leader(ALICE);
    let err = h.put(outsider, "tok", Some(victim)).unwrap_err();
    assert!(
        matches!(err, RequestError::BindOutsideSession(pid) if pid.raw() == victim),
        "{err:?}"
    );
    assert!(h.vault_contents().is_empty(), "nothing planted");
    let member = h.member(victim);
    assert!(h.put(member, "tok", Some(victim)).is_ok());
    let root = h.leader(0);
    assert!(h.put(root, "root-tok", Some(victim)).is_ok());
}

/// A tracer attached to the shell before its first `put` could make it run
/// `get` for the attacker (issue 27, item 1).
#[test]
fn a_put_from_a_session_traced_from_outside_is_refused_and_names_the_tracer() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let outsider = h.leader(ALICE);
    h.world.lock().procs.get_mut(&leader).unwrap().tracer = outsider;
    let err = h.put(leader, "tok", None).unwrap_err();
    match err {
        RequestError::TracedFromOutside { member, tracer, .. } => {
            assert_eq!((member.raw(), tracer.raw()), (leader, outsider));
        }
        other => panic!("not refused for the tracer: {other:?}"),
    }
    assert!(!h.holds_secret(ALICE, "tok"));
    assert!(
        !h.world.lock().kernel.leaders.contains(&leader),
        "a refused put leaves no watch behind"
    );
}

#[test]
fn a_put_is_refused_when_any_member_is_traced_from_outside_but_not_from_inside() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let member = h.member(leader);
    let debugger = h.member(leader);
    h.world.lock().procs.get_mut(&member).unwrap().tracer = debugger;
    h.stored(leader, "tok");
    let outsider = h.leader(ALICE);
    h.world.lock().procs.get_mut(&member).unwrap().tracer = outsider;
    let err = h.put(leader, "more", None).unwrap_err();
    assert!(
        matches!(err, RequestError::TracedFromOutside { tracer, .. } if tracer.raw() == outsider),
        "{err:?}"
    );
    assert!(
        h.world.lock().kernel.leaders.contains(&leader),
        "the session keeps its guard for the secret it holds"
    );
}

#[test]
fn a_get_is_refused_while_the_leader_or_a_parent_in_the_session_is_traced_from_outside() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let outsider = h.leader(ALICE);
    let script = h.member(leader);
    let client = h.spawn(ALICE, script, leader);
    h.world.lock().procs.get_mut(&leader).unwrap().tracer = outsider;
    let err = h.get(client, "tok").unwrap_err();
    assert!(
        matches!(err, RequestError::TracedFromOutside { member, .. } if member.raw() == leader),
        "{err:?}"
    );
    h.world.lock().procs.get_mut(&leader).unwrap().tracer = 0;
    h.world.lock().procs.get_mut(&script).unwrap().tracer = outsider;
    let err = h
        .try_request(client, exec_request(&["tok"]), None)
        .unwrap_err();
    assert!(
        matches!(err, RequestError::TracedFromOutside { member, .. } if member.raw() == script),
        "{err:?}"
    );
    h.world.lock().procs.get_mut(&script).unwrap().tracer = 0;
    assert!(h.get(client, "tok").is_ok());
}
