//! Holders: exec, forks, exits, grants that drain.

use std::collections::HashMap;

use crate::daemon::state::{fake::Proc, triggers::SIGNALS_WORTH_A_READ};

use super::*;

#[test]
fn exec_makes_the_caller_a_contained_holder_until_it_exits() {
    let mut h = Harness::new();
    let (_, holder) = h.session_holding(ALICE);
    let grant = {
        let world = h.world.lock();
        let (grant, state) = world.kernel.holders[&holder];
        assert_eq!(state, HolderState::Holding);
        assert!(world.cgroups[&grant].contains(&holder));
        grant
    };
    assert_eq!(h.status().holders, 1);
    h.exit(holder);
    assert_eq!(h.status().holders, 0);
    assert!(
        !h.world.lock().cgroups.contains_key(&grant),
        "cgroup removed"
    );
    assert!(
        h.holds_secret(ALICE, "tok"),
        "a holder's exit wipes nothing"
    );
}

#[test]
fn contained_holders_cost_no_descriptor_and_their_lost_exits_are_read_off_the_cgroup() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    let children: Vec<i32> = (0..3).map(|_| h.fork(holder)).collect();
    assert_eq!(h.core.sessions.holders.len(), 4);
    assert!(
        h.core
            .sessions
            .holders
            .values()
            .all(|holder| holder.process.is_none()),
        "no handle per contained holder"
    );
    // One child dies and its exit report is lost.
    h.world.lock().procs.get_mut(&children[0]).unwrap().alive = false;
    h.revoke(leader, "tok");
    h.settle();
    assert!(
        h.core.is_settling(),
        "the lost exit keeps one holder on the books"
    );
    h.advance(Duration::from_millis(100));
    assert!(!h.core.is_settling());
    let record = h.last_trigger();
    assert_eq!(
        record["outcome"], "wiped",
        "the cgroup is empty: all are dead"
    );
    assert_eq!(h.status().holders, 0);
}

#[test]
fn execs_are_capped_overall_and_per_user() {
    let mut h = Harness::new();
    let alice = h.storing(ALICE);
    h.start_holders(alice, 4);
    let fifth = h.member(alice);
    let err = h
        .try_request(fifth, exec_request(&["tok"]), None)
        .unwrap_err();
    assert!(
        matches!(err, RequestError::TooManyExecsOfUser { limit: 4 }),
        "{err:?}"
    );
    let root = h.storing(0);
    h.start_holders(root, 12);
    let bob = h.storing(BOB);
    let err = h
        .try_request(bob, exec_request(&["tok"]), None)
        .unwrap_err();
    assert!(
        matches!(err, RequestError::TooManyExecs { limit: 16 }),
        "{err:?}"
    );
}

#[test]
fn a_grant_outlives_its_known_holders_while_its_cgroup_is_populated() {
    // Without eBPF only the exec caller is known; a child it left behind in
    // the cgroup still holds the secret.
    let no_ebpf = Parts {
        kernel: false,
        ..Parts::ALL
    };
    let mut h = Harness::with(no_ebpf, Config::default());
    let (leader, holder) = h.session_holding(ALICE);
    let child = h.fork(holder);
    h.exit(holder);
    assert_eq!(h.core.sessions.grants.len(), 1, "the grant drains");
    h.exit(leader);
    assert!(h.was_killed(child), "the cgroup was killed");
    h.settle();
    h.advance(Duration::from_secs(1));
    assert!(h.core.sessions.grants.is_empty(), "forgotten once empty");
    let record = h.last_trigger();
    assert_eq!(record["outcome"], "wiped");
}

#[test]
fn a_child_whose_fork_report_was_lost_dies_with_everything_else() {
    let mut h = Harness::new();
    let (_, holder) = h.session_holding(ALICE);
    let child = h.spawn(ALICE, holder, -1);
    {
        let mut world = h.world.lock();
        let grant = world.kernel.holders[&holder].0;
        world.cgroups.get_mut(&grant).unwrap().insert(child);
        world
            .kernel
            .holders
            .insert(child, (grant, HolderState::Holding));
        world.kernel.dropped = 1;
    }
    // The parent's exit and the overflow come in one batch.
    h.exit(holder);
    assert!(h.core.vault.is_empty());
    assert!(h.was_killed(child));
}

#[test]
fn roots_holders_are_killed_by_handle_even_outside_their_cgroup() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(0);
    // Root may move itself out of its grant's cgroup.
    for members in h.world.lock().cgroups.values_mut() {
        members.remove(&holder);
    }
    h.revoke(leader, "tok");
    assert!(h.was_killed(holder));
}

#[test]
fn an_exec_from_a_reused_pid_gets_a_grant_and_cgroup_of_its_own() {
    let mut h = Harness::new();
    let (_, holder) = h.session_holding(ALICE);
    let bob = h.storing(BOB);
    // The holder exits unreported so far; Bob's process gets its pid.
    {
        let mut world = h.world.lock();
        world.kernel.holders.remove(&holder);
        *world.procs.get_mut(&holder).unwrap() = fake::Proc::new(Uid(BOB), bob, bob, holder);
        for members in world.cgroups.values_mut() {
            members.remove(&holder);
        }
    }
    h.holds(holder, &["tok"]);
    let grant = h.world.lock().kernel.holders[&holder].0;
    assert!(h.world.lock().cgroups[&grant].contains(&holder));
    // The old exit report arrives late, then Bob's session ends.
    let late = h.event(EventKind::HolderExit, holder, 0);
    h.events(vec![late]);
    h.exit(bob);
    assert!(h.was_killed(holder), "Bob's holder dies with Bob's session");
}

#[test]
fn an_exec_racing_the_callers_exit_is_refused_and_leaves_no_kernel_entry() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let caller = h.member(leader);
    h.world.lock().procs.get_mut(&caller).unwrap().exiting = true;
    let err = h
        .try_request(caller, exec_request(&["tok"]), None)
        .unwrap_err();
    assert!(matches!(err, RequestError::CallerExited), "{err:?}");
    assert!(!h.world.lock().kernel.holders.contains_key(&caller));
}

#[test]
fn a_dead_holder_whose_exit_was_not_reported_leaves_the_kernel_map_too() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    h.world.lock().procs.get_mut(&holder).unwrap().alive = false;
    h.revoke(leader, "tok");
    h.advance(Duration::from_millis(150));
    assert!(h.core.sessions.holders.is_empty());
    assert!(!h.world.lock().kernel.holders.contains_key(&holder));
}

#[test]
fn a_child_born_to_a_wiped_holder_is_killed() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    h.world.lock().procs.get_mut(&holder).unwrap().unkillable = true;
    h.revoke(leader, "tok");
    let late = h.fork(holder);
    assert!(h.was_killed(late));
    // A child of a grant the guardian has forgotten holds only wiped secrets.
    let orphan = h.spawn(ALICE, 1, 0);
    let mut fork = event(EventKind::HolderFork, orphan, 0);
    fork.grant = 999;
    h.events(vec![fork]);
    assert!(h.was_killed(orphan));
}

/// Issue 27 item 6.1: the caller of an `exec` dies as its request waits,
/// and root's new process takes its pid just before the guardian moves that
/// pid number into the grant's cgroup. The newcomer must end where it was,
/// in no grant, and outlive the session's wipe.
#[test]
fn a_pid_reused_before_the_caller_is_contained_moves_no_one_into_a_grant() {
    let with_ebpf = Parts::ALL;
    let without_ebpf = Parts {
        kernel: false,
        ..Parts::ALL
    };
    for parts in [with_ebpf, without_ebpf] {
        let mut h = Harness::with(parts, Config::default());
        let leader = h.storing(ALICE);
        let caller = h.member(leader);
        let mut newcomer = Proc::new(Uid::ROOT, 1, 1, caller);
        newcomer.cgroup = "/system.slice/sshd.service".into();
        h.world.lock().reuse_at_contain = Some(newcomer);

        let err = h
            .try_request(caller, exec_request(&["tok"]), None)
            .unwrap_err();
        assert!(matches!(err, RequestError::CallerExited), "{err:?}");
        {
            let world = h.world.lock();
            let proc = &world.procs[&caller];
            assert_eq!(proc.uid, Uid::ROOT, "the newcomer has the pid");
            assert_eq!(
                proc.cgroup,
                std::path::Path::new("/system.slice/sshd.service"),
                "put back where it was"
            );
            assert!(
                world
                    .cgroups
                    .values()
                    .all(|members| !members.contains(&caller)),
                "in no grant: {:?}",
                world.cgroups
            );
            assert!(!world.kernel.holders.contains_key(&caller));
        }
        assert_eq!(h.status().holders, 0);

        h.exit(leader);
        h.settle();
        assert!(!h.was_killed(caller), "the wipe spares the newcomer");
        assert!(h.alive(caller));
    }
}

#[test]
fn without_ebpf_or_cgroups_the_holders_descendants_are_found_and_killed() {
    let mut h = Harness::with(Parts::NONE, Config::default());
    let (leader, holder) = h.session_holding(ALICE);
    let child = h.spawn(ALICE, holder, -1);
    let grandchild = h.spawn(ALICE, child, -1);
    h.exit(leader);
    let killed = h.world.lock().killed();
    for pid in [holder, child, grandchild] {
        assert!(killed.contains(&pid), "{pid} not killed: {killed:?}");
    }
    h.settle();
    assert_eq!(h.status().holders, 0, "exits reported by the watchers");
    let record = h.last_trigger();
    assert_eq!(record["latency"]["holders"], 3);
}

#[test]
fn a_failed_cgroup_kill_falls_back_to_each_holder_and_dooms_it_in_the_kernel() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    h.world.lock().fail_cgroup_kill = true;
    h.revoke(leader, "tok");
    let world = h.world.lock();
    assert!(world.killed().contains(&holder));
    assert_eq!(world.kernel.holders[&holder].1, HolderState::Doomed);
}

#[test]
fn a_grant_s_owner_is_in_the_kernel_for_as_long_as_the_grant() {
    let mut h = Harness::new();
    let (_, holder) = h.session_holding(BOB);
    let grant = h.world.lock().kernel.holders[&holder].0;
    assert_eq!(
        h.world.lock().kernel.grant_owners.get(&grant),
        Some(&Uid(BOB))
    );
    h.exit(holder);
    h.settle();
    assert!(h.world.lock().kernel.grant_owners.is_empty());
}

#[test]
fn lost_holder_events_are_made_good_from_the_kernel_map_and_cost_no_secret() {
    let mut h = Harness::new();
    let (alice, holder) = h.session_holding(ALICE);
    let bob = h.storing(BOB);
    h.world.lock().kernel.lose_holder_events = true;
    let unseen = h.fork(holder);
    h.exit(holder);
    h.world.lock().kernel.lose_holder_events = false;
    h.events(Vec::new());
    assert_eq!(h.world.lock().kernel.holder_dropped, 2);
    assert!(h.holds_secret(ALICE, "tok") && h.holds_secret(BOB, "tok"));
    let status = h.status();
    assert_eq!((status.holders, status.holder_events_lost), (1, 2));
    assert!(h.alive(unseen));
    h.revoke(bob, "tok");
    h.revoke(alice, "tok");
    assert!(h.was_killed(unseen), "the unseen child dies with its grant");
}

#[test]
fn without_cgroups_lost_holder_events_wipe_everything() {
    let parts = Parts {
        cgroups: false,
        ..Parts::ALL
    };
    let mut h = Harness::with(parts, Config::default());
    let (_, holder) = h.session_holding(ALICE);
    h.storing(BOB);
    h.world.lock().kernel.lose_holder_events = true;
    h.fork(holder);
    h.events(Vec::new());
    assert!(!h.holds_secret(ALICE, "tok") && !h.holds_secret(BOB, "tok"));
}

#[test]
fn the_kernel_is_asked_to_kill_the_newest_holder_at_its_leaders_exit() {
    let mut h = Harness::new();
    let (leader, first) = h.session_holding(ALICE);
    assert_eq!(
        h.world.lock().kernel.early_kills,
        HashMap::from([(leader, first)])
    );
    let newest = h.member(leader);
    h.holds(newest, &["tok"]);
    assert_eq!(
        h.world.lock().kernel.early_kills,
        HashMap::from([(leader, newest)])
    );
    // Once the leader is no longer watched no entry is left that could
    // name a later process with the same pid.
    h.exit(leader);
    h.settle();
    assert_eq!(h.world.lock().kernel.early_kills, HashMap::new());
}

/// The pids sent a signal by handle, in order.
fn signalled(h: &Harness) -> Vec<i32> {
    h.world
        .lock()
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Signal { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect()
}

#[test]
fn root_holders_killed_with_their_cgroup_are_not_signalled_again_but_one_that_left_it_is() {
    let mut h = Harness::new();
    let (leader, inside) = h.session_holding(0);
    // Past this many handles the cgroup is read rather than each signalled.
    for _ in 0..SIGNALS_WORTH_A_READ {
        h.fork(inside);
    }
    let outside = h.fork(inside);
    // Root may move its own holder out of the grant's cgroup.
    for members in h.world.lock().cgroups.values_mut() {
        members.remove(&outside);
    }
    h.world.lock().effects.clear();
    h.revoke(leader, "tok");
    let signalled = signalled(&h);
    assert_eq!(signalled, vec![outside]);
    h.settle();
    assert!(!h.core.is_settling(), "all are dead");
}

#[test]
fn a_few_root_holders_are_signalled_by_handle_without_reading_their_cgroup() {
    let mut h = Harness::new();
    let (leader, inside) = h.session_holding(0);
    let outside = h.fork(inside);
    for members in h.world.lock().cgroups.values_mut() {
        members.remove(&outside);
    }
    h.world.lock().effects.clear();
    h.revoke(leader, "tok");
    let mut signalled = signalled(&h);
    signalled.sort_unstable();
    assert_eq!(signalled, vec![inside, outside]);
    h.settle();
    assert!(!h.core.is_settling(), "both are dead");
}

/// Issue 27, item 6: a child the guardian cannot open a handle on (out of
/// descriptors) is not taken for one that already exited: the secrets it
/// would outlive are wiped.
#[test]
fn a_child_that_cannot_be_tracked_wipes_its_grant_instead_of_being_ignored() {
    let uncontained = Parts {
        cgroups: false,
        ..Parts::ALL
    };
    let mut h = Harness::with(uncontained, Config::default());
    let leader = h.storing(ALICE);
    let holder = h.member(leader);
    h.holds(holder, &["tok"]);
    h.world.lock().out_of_descriptors = true;
    let child = h.fork(holder);
    h.world.lock().out_of_descriptors = false;
    assert!(h.alive(child));
    assert!(
        !h.holds_secret(ALICE, "tok"),
        "the child would outlive its secret"
    );
    h.settle();
    assert_eq!(h.last_trigger()["reason"], "holder_untracked");
}
