//! Triggers: wipe before kill, every cause, survivors.

use super::*;

#[test]
fn every_secret_is_wiped_before_any_holder_is_killed() {
    // Contained holders die by their cgroup; without cgroups, one by one.
    let one_by_one = Parts {
        cgroups: false,
        ..Parts::ALL
    };
    for parts in [Parts::ALL, one_by_one] {
        let mut h = Harness::with(parts, Config::default());
        let (first, second) = (h.leader(ALICE), h.leader(ALICE));
        h.stored(first, "a");
        h.stored(second, "b");
        let holder = h.member(first);
        h.holds(holder, &["a"]);
        let child = h.fork(holder);
        assert_eq!(fake::live_secrets(), 2, "the test's own copies are gone");
        h.exit(first);
        let effects = h.world.lock().effects.clone();
        assert!(!effects.is_empty(), "nothing was killed");
        for effect in &effects {
            let alive = match effect {
                Effect::Signal { secrets_alive, .. } | Effect::CgroupKill { secrets_alive, .. } => {
                    *secrets_alive
                }
                Effect::ContinueIfStopped { .. } | Effect::WipeFile { .. } => continue,
            };
            assert_eq!(
                alive, 1,
                "only the other leader's secret is left: {effect:?}"
            );
        }
        assert!(h.was_killed(holder) && h.was_killed(child), "{effects:?}");
        h.settle();
        assert!(!h.alive(holder) && !h.alive(child));
        assert!(h.holds_secret(ALICE, "b"));
    }
}

#[test]
fn a_leaders_exit_wipes_its_secrets_and_records_the_latency() {
    let mut h = Harness::new();
    let (leader, _) = h.session_holding(ALICE);
    h.exit(leader);
    assert!(!h.holds_secret(ALICE, "tok"));
    assert!(
        h.world.lock().records_of("trigger").is_empty(),
        "recorded only once the holders are dead"
    );
    h.settle();
    let record = h.last_trigger();
    assert_eq!(record["reason"], "leader_exit");
    assert_eq!(record["outcome"], "wiped");
    assert_eq!(record["leader"], leader);
    assert_eq!(record["latency"]["holders"], 1);
    assert!(record["latency"]["holders_dead_ns"].as_u64().unwrap() > 0);
    assert!(!h.world.lock().kernel.leaders.contains(&leader));
}

#[test]
fn a_gone_leaders_wards_are_forgotten_only_once_its_holders_are_dead() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    h.exit(leader);
    assert!(h.was_killed(holder));
    assert!(!h.world.lock().kernel.leaders.contains(&leader));
    // Forgetting them walks the whole ward map: not while holders need the CPU.
    assert!(h.world.lock().kernel.wards_forgotten.is_empty());
    h.settle();
    assert_eq!(h.world.lock().kernel.wards_forgotten, vec![leader]);
    assert!(h.core.sessions.leaders.is_empty());
}

#[test]
fn a_leader_watched_while_a_gone_leaders_wards_wait_has_them_forgotten_first() {
    let mut h = Harness::new();
    let (gone, _holder) = h.session_holding(ALICE);
    h.exit(gone);
    assert!(h.core.is_settling(), "its holder is still dying");
    // A member of the gone session (a tmux server) may be this new
    // session's parent: its mark must not be taken for this leader's.
    h.storing(BOB);
    assert_eq!(h.world.lock().kernel.wards_forgotten, vec![gone]);
}

/// A leader that outlives its hangup keeps its session guarded (issue 27),
/// and its next `put` is watched for a hangup again.
#[test]
fn a_hangup_wipes_and_keeps_guarding_the_living_leader() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let hangup = event(EventKind::LeaderHangup, leader, 77);
    h.events(vec![hangup]);
    assert!(!h.holds_secret(ALICE, "tok"));
    assert!(h.alive(leader));
    assert!(h.world.lock().kernel.leaders.contains(&leader));
    let record = h.last_trigger();
    assert_eq!(record["reason"], "leader_hangup");
    h.stored(leader, "tok");
    h.events(vec![hangup]);
    assert!(!h.holds_secret(ALICE, "tok"), "the second hangup wipes too");
}

#[test]
fn one_leader_watched_once_for_many_secrets_all_wiped_at_its_exit() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    h.stored(leader, "a");
    h.stored(leader, "b");
    assert_eq!(h.core.sessions.leaders.len(), 1);
    h.exit(leader);
    assert!(h.core.vault.is_empty());
}

#[test]
fn a_stale_exit_report_for_a_reused_pid_is_ignored() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let pid = Pid::new(leader).unwrap();
    h.send(Msg::LeaderGone { pid, id: 0 });
    assert!(h.holds_secret(ALICE, "tok"));
}

#[test]
fn the_ttl_wipes_when_it_runs_out_and_not_before() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    h.stored_for(leader, "tok", 60);
    h.advance(Duration::from_secs(59));
    assert!(h.holds_secret(ALICE, "tok"));
    h.advance(Duration::from_secs(2));
    assert!(!h.holds_secret(ALICE, "tok"));
    let record = h.last_trigger();
    assert_eq!(record["reason"], "ttl_expired");
}

#[test]
fn a_revoked_secrets_timer_never_wipes_a_new_secret_of_the_same_name() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let key = SecretKey {
        owner: Uid(ALICE),
        name: name("tok"),
    };
    h.stored_for(leader, "tok", 60);
    let old_id = h.core.vault.get(&key).unwrap().id;
    h.revoke(leader, "tok");
    assert_eq!(
        h.pending_timers(),
        0,
        "the revoked secret's timer is cancelled"
    );
    h.stored_for(leader, "tok", 600);
    h.advance(Duration::from_secs(61));
    assert!(h.holds_secret(ALICE, "tok"));
    // Even a report that was already on its way names the old secret.
    h.send(Msg::Expired { key, id: old_id });
    assert!(h.holds_secret(ALICE, "tok"));
}

#[test]
fn revoke_touches_only_the_callers_secret() {
    let mut h = Harness::new();
    let (alice, bob) = (h.leader(ALICE), h.leader(BOB));
    h.stored(alice, "tok");
    h.stored(bob, "tok");
    let bobs_holder = h.member(bob);
    h.holds(bobs_holder, &["tok"]);
    assert!(matches!(
        h.revoke(alice, "tok"),
        Response::Revoked { holders_killed: 0 }
    ));
    assert!(h.holds_secret(BOB, "tok"));
    assert!(!h.was_killed(bobs_holder));
    assert!(h.world.lock().effects.is_empty(), "nothing was killed");
    let err = h
        .try_request(alice, Request::Revoke { name: name("tok") }, None)
        .unwrap_err();
    assert!(matches!(err, RequestError::NoSuchSecret(_)));
}

#[test]
fn wipe_all_wipes_the_callers_secrets_and_root_wipes_everyones() {
    let mut h = Harness::new();
    let (alice, bob, root) = (h.leader(ALICE), h.leader(BOB), h.leader(0));
    h.stored(alice, "a1");
    h.stored(alice, "a2");
    h.stored(bob, "b");
    let reply = h.try_request(alice, Request::WipeAll {}, None).unwrap();
    assert!(matches!(reply.response, Response::Wiped { secrets: 2, .. }));
    assert!(h.holds_secret(BOB, "b"));
    let reply = h.try_request(root, Request::WipeAll {}, None).unwrap();
    assert!(matches!(reply.response, Response::Wiped { secrets: 1, .. }));
    assert!(h.core.vault.is_empty());
}

#[test]
fn lost_kernel_events_wipe_every_secret_of_every_user() {
    let mut h = Harness::new();
    let (alice, bob) = (h.leader(ALICE), h.leader(BOB));
    h.stored(alice, "a");
    h.stored(bob, "b");
    let holder = h.member(bob);
    h.holds(holder, &["b"]);
    h.world.lock().kernel.dropped = 3;
    h.events(Vec::new());
    assert!(h.core.vault.is_empty());
    assert!(h.was_killed(holder));
    assert_eq!(h.status().dropped_events, 3);
    h.settle();
    let reasons: Vec<_> = h
        .world
        .lock()
        .records_of("trigger")
        .iter()
        .map(|r| r["reason"].clone())
        .collect();
    assert_eq!(reasons, ["kernel_events_lost"]);
}

#[test]
fn the_supervisors_death_wipes_everything() {
    let mut h = Harness::new();
    h.storing(ALICE);
    h.world.lock().procs.get_mut(&SUPERVISOR).unwrap().alive = false;
    h.pump();
    assert!(h.core.vault.is_empty());
    assert_eq!(h.status().fail_closed, FailClosed::None);
}

#[test]
fn shutdown_wipes_everything_and_stops() {
    let mut h = Harness::new();
    h.storing(ALICE);
    assert!(!h.send(Msg::Shutdown));
    assert!(h.core.vault.is_empty());
    let record = h.last_trigger();
    assert_eq!(record["reason"], "shutdown");
}

#[test]
fn a_holder_that_will_not_die_is_signalled_again_then_recorded_as_surviving() {
    let mut h = Harness::new();
    let (leader, stuck) = h.session_holding(ALICE);
    h.world.lock().procs.get_mut(&stuck).unwrap().unkillable = true;
    h.revoke(leader, "tok");
    h.settle();
    h.advance(Duration::from_millis(350));
    let kills = h
        .world
        .lock()
        .effects
        .iter()
        .filter(|effect| matches!(effect, Effect::CgroupKill { .. }))
        .count();
    assert!(kills >= 3, "killed again every 100 ms: {kills}");
    assert!(h.core.is_settling());
    h.advance(Duration::from_secs(5));
    assert!(!h.core.is_settling());
    let record = h.last_trigger();
    assert_eq!(record["outcome"], "holders_survived");
    assert_eq!(
        record["latency"]["holders_dead_ns"],
        serde_json::Value::Null
    );
}

#[test]
fn a_process_left_in_the_cgroup_keeps_the_trigger_from_reporting_wiped() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    // A descendant the guardian never heard of (its fork event lost).
    let unseen = h.spawn(ALICE, holder, -1);
    {
        let mut world = h.world.lock();
        let grant = world.kernel.holders[&holder].0;
        world.cgroups.get_mut(&grant).unwrap().insert(unseen);
        world.procs.get_mut(&unseen).unwrap().unkillable = true;
    }
    h.revoke(leader, "tok");
    h.settle();
    assert!(!h.alive(holder));
    assert!(h.core.is_settling(), "the cgroup is not empty yet");
    h.advance(Duration::from_millis(250));
    let cgroup_kills = h
        .world
        .lock()
        .effects
        .iter()
        .filter(|effect| matches!(effect, Effect::CgroupKill { .. }))
        .count();
    assert!(
        cgroup_kills >= 3,
        "the cgroup is killed again: {cgroup_kills}"
    );
    h.advance(Duration::from_secs(5));
    let record = h.last_trigger();
    assert_eq!(record["outcome"], "holders_survived");
}

#[test]
fn a_holder_that_fuse_keeps_alive_is_freed_at_the_next_tick_and_audited() {
    let mut h = Harness::new();
    let (leader, stuck) = h.session_holding(ALICE);
    {
        let mut world = h.world.lock();
        world.procs.get_mut(&stuck).unwrap().unkillable = true;
        world.fuse_traps.insert(stuck, 40);
    }
    h.revoke(leader, "tok");
    h.settle();
    assert!(h.alive(stuck), "SIGKILL alone does not end it");
    h.advance(Duration::from_millis(100));
    h.settle();
    assert!(!h.alive(stuck));
    let aborted = h.world.lock().records_of("fuse_abort");
    assert_eq!(aborted.len(), 1);
    let reason = aborted[0]["reason"].as_str().unwrap();
    assert!(reason.contains("connection(s) [40]"), "{reason}");
    h.advance(Duration::from_millis(100));
    assert_eq!(h.last_trigger()["outcome"], "wiped", "0 survivors, truly");
}

/// A wipe that leaves the leader alive leaves the value in its shell's
/// memory and whoever caused the wipe still there (issue 27, item 2).
#[test]
fn a_session_wiped_while_its_leader_lives_stays_guarded_until_the_leader_exits() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let attacker = h.leader(ALICE);
    h.tamper_by(attacker, leader, TamperSyscall::OpenMem, leader, 0);
    assert!(!h.holds_secret(ALICE, "tok"), "the tamper wiped it");
    h.settle();
    let guarded = |h: &Harness| {
        let world = h.world.lock();
        world.kernel.leaders.contains(&leader) && world.kernel.armed
    };
    assert!(guarded(&h), "still guarded after a tamper");
    h.stored(leader, "tok");
    h.revoke(leader, "tok");
    h.settle();
    assert!(guarded(&h), "still guarded after a revoke");
    assert_eq!(h.status().leaders, 1, "status counts the guarded session");
    h.exit(leader);
    h.settle();
    assert!(!h.world.lock().kernel.leaders.contains(&leader));
    assert_eq!(h.status().leaders, 0);
}
