//! The state machine driven in-process against a fake world: every rule of
//! the switch, as an ordinary user, in milliseconds.

use std::time::Duration;

use guardian_ebpf::{EventKind, HolderState, TamperSyscall};

use super::{
    Msg, Reply, RequestError,
    fake::{self, Effect, GUARDIAN, Harness, Parts, SUPERVISOR, event},
};
use crate::{
    config::{Config, TamperResponse},
    daemon::state::SecretKey,
    os::{
        process::{Pid, Uid},
        secret_mem::SecretBuf,
    },
    protocol::{
        Containment, ExecNames, FailClosed, ForkTracking, MAX_REPLY_BYTES, MAX_SECRET, Request,
        Response, SecretName, TamperProtection, Ttl, WatchMode,
    },
};

const ALICE: u32 = 1000;
const BOB: u32 = 1001;

fn name(raw: &str) -> SecretName {
    raw.parse().unwrap()
}

fn bytes(value: &[u8]) -> SecretBuf {
    let mut buf = SecretBuf::new(value.len()).unwrap();
    buf.as_mut_slice().copy_from_slice(value);
    buf
}

fn put_request(secret: &str, bind: Option<i32>, ttl_secs: Option<u64>) -> Request {
    Request::Put {
        name: name(secret),
        bind: bind.map(|raw| Pid::new(raw).unwrap()),
        ttl_secs: ttl_secs.map(|secs| Ttl::try_from(secs).unwrap()),
        len: 6,
    }
}

fn get_request(secret: &str) -> Request {
    Request::Get { name: name(secret) }
}

fn exec_request(secrets: &[&str]) -> Request {
    Request::Exec {
        names: ExecNames::try_from(
            secrets
                .iter()
                .map(|secret| name(secret))
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    }
}

impl Harness {
    /// `put` of `secret` (value "s3cret") from `pid`.
    fn put(&mut self, pid: i32, secret: &str, bind: Option<i32>) -> Result<Reply, RequestError> {
        self.try_request(pid, put_request(secret, bind, None), Some(bytes(b"s3cret")))
    }

    /// `put` that must succeed; returns the leader it was bound to.
    fn stored(&mut self, pid: i32, secret: &str) -> i32 {
        match self.put(pid, secret, None).unwrap().response {
            Response::Stored { leader } => leader,
            other => panic!("not stored: {other:?}"),
        }
    }

    fn get(&mut self, pid: i32, secret: &str) -> Result<Vec<u8>, RequestError> {
        let reply = self.try_request(pid, get_request(secret), None)?;
        Ok(reply.secrets[0].as_slice().to_vec())
    }

    /// `exec` that must succeed: `pid` becomes a holder.
    fn holds(&mut self, pid: i32, secrets: &[&str]) {
        let reply = self.try_request(pid, exec_request(secrets), None).unwrap();
        assert_eq!(reply.secrets.len(), secrets.len());
    }

    fn holds_secret(&self, uid: u32, secret: &str) -> bool {
        let key = SecretKey {
            owner: Uid(uid),
            name: name(secret),
        };
        self.core.vault.get(&key).is_some()
    }

    fn revoke(&mut self, pid: i32, secret: &str) -> Response {
        let request = Request::Revoke { name: name(secret) };
        self.try_request(pid, request, None).unwrap().response
    }

    fn tamper(&mut self, attacker: i32, target: i32) {
        let mut attempt = event(EventKind::Tamper, attacker, target);
        attempt.syscall = TamperSyscall::ProcessVmReadv as u32;
        attempt.uid = ALICE;
        self.events(vec![attempt]);
    }

    fn status(&mut self) -> crate::protocol::StatusInfo {
        match self.try_request(GUARDIAN, Request::Status {}, None) {
            Ok(Reply {
                response: Response::Status(status),
                ..
            }) => *status,
            _ => panic!("no status"),
        }
    }

    fn alive(&self, pid: i32) -> bool {
        self.world.lock().procs[&pid].alive
    }

    /// The leader of a new session of `uid` that stored "tok".
    fn storing(&mut self, uid: u32) -> i32 {
        let leader = self.leader(uid);
        self.stored(leader, "tok");
        leader
    }

    /// A session of `uid` holding "tok", with one holder: (leader, holder).
    fn session_holding(&mut self, uid: u32) -> (i32, i32) {
        let leader = self.storing(uid);
        let holder = self.member(leader);
        self.holds(holder, &["tok"]);
        (leader, holder)
    }

    /// `count` execs of "tok" from `leader`'s session.
    fn start_holders(&mut self, leader: i32, count: usize) {
        for _ in 0..count {
            let holder = self.member(leader);
            self.holds(holder, &["tok"]);
        }
    }

    /// Sent SIGKILL, one by one or with its cgroup.
    fn was_killed(&self, pid: i32) -> bool {
        self.world.lock().procs[&pid].killed
    }
}

// Binding.

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
        (thread, |e| matches!(e, RequestError::Thread(_))),
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
    let leader = h.leader(ALICE);
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

// Access.

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
    let runner = h.spawn(ALICE, 1, 0);
    assert!(h.put(runner, "tok", Some(service)).is_ok());
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

// Triggers.

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
                Effect::ContinueIfStopped { .. } => continue,
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
    let record = h.world.lock().records_of("trigger").pop().unwrap();
    assert_eq!(record["reason"], "leader_exit");
    assert_eq!(record["outcome"], "wiped");
    assert_eq!(record["leader"], leader);
    assert_eq!(record["latency"]["holders"], 1);
    assert!(record["latency"]["holders_dead_ns"].as_u64().unwrap() > 0);
    assert!(!h.world.lock().kernel.leaders.contains(&leader));
    assert!(h.core.sessions.leaders.is_empty());
}

#[test]
fn a_hangup_wipes_and_stops_watching_the_living_leader() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    h.events(vec![event(EventKind::LeaderHangup, leader, 77)]);
    assert!(!h.holds_secret(ALICE, "tok"));
    assert!(h.alive(leader));
    assert!(!h.world.lock().kernel.leaders.contains(&leader));
    let record = h.world.lock().records_of("trigger").pop().unwrap();
    assert_eq!(record["reason"], "leader_hangup");
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
    let ttl = put_request("tok", None, Some(60));
    h.try_request(leader, ttl, Some(bytes(b"s3cret"))).unwrap();
    h.advance(Duration::from_secs(59));
    assert!(h.holds_secret(ALICE, "tok"));
    h.advance(Duration::from_secs(2));
    assert!(!h.holds_secret(ALICE, "tok"));
    let record = h.world.lock().records_of("trigger").pop().unwrap();
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
    let first = put_request("tok", None, Some(60));
    h.try_request(leader, first, Some(bytes(b"s3cret")))
        .unwrap();
    let old_id = h.core.vault.get(&key).unwrap().id;
    h.revoke(leader, "tok");
    assert_eq!(
        h.pending_timers(),
        0,
        "the revoked secret's timer is cancelled"
    );
    let second = put_request("tok", None, Some(600));
    h.try_request(leader, second, Some(bytes(b"s3cret")))
        .unwrap();
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
    let record = h.world.lock().records_of("trigger").pop().unwrap();
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
    let record = h.world.lock().records_of("trigger").pop().unwrap();
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
    let record = h.world.lock().records_of("trigger").pop().unwrap();
    assert_eq!(record["outcome"], "holders_survived");
}

// Holders.

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
    let record = h.world.lock().records_of("trigger").pop().unwrap();
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
    let record = h.world.lock().records_of("trigger").pop().unwrap();
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
    let record = h.world.lock().records_of("trigger").pop().unwrap();
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

// Tamper attempts.

#[test]
fn a_tamper_attempt_on_a_holder_wipes_what_it_holds() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    h.stored(leader, "other");
    let holder = h.member(leader);
    h.holds(holder, &["tok"]);
    h.tamper(4242, holder);
    assert!(!h.holds_secret(ALICE, "tok"));
    assert!(h.holds_secret(ALICE, "other"), "only what the target holds");
    assert!(h.was_killed(holder));
    let record = h.world.lock().records_of("tamper").pop().unwrap();
    assert_eq!(record["outcome"], "deny");
    assert_eq!(record["names"][0], "tok");
    assert_eq!(record["peer"]["pid"], 4242);
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("process_vm_readv (request 0) on holder"),
        "{reason}"
    );
}

#[test]
fn with_the_audit_policy_a_tamper_attempt_is_only_recorded() {
    let config = Config {
        tamper_response: TamperResponse::Audit,
        ..Config::default()
    };
    let mut h = Harness::with(Parts::ALL, config);
    let (_, holder) = h.session_holding(ALICE);
    h.tamper(4242, holder);
    assert!(h.holds_secret(ALICE, "tok"));
    assert!(!h.was_killed(holder));
    assert!(h.world.lock().effects.is_empty(), "nothing was killed");
    assert_eq!(h.world.lock().records_of("tamper").len(), 1);
}

#[test]
fn a_tamper_attempt_on_the_supervisor_continues_it_and_wipes_nothing() {
    let mut h = Harness::new();
    h.storing(ALICE);
    h.tamper(4242, SUPERVISOR);
    h.tamper(4243, GUARDIAN);
    assert!(h.holds_secret(ALICE, "tok"));
    let world = h.world.lock();
    assert!(
        world
            .effects
            .contains(&Effect::ContinueIfStopped { pid: SUPERVISOR })
    );
    let reasons: Vec<String> = world
        .records_of("tamper")
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(reasons[0].contains("on supervisor"), "{reasons:?}");
    assert!(reasons[1].contains("on guardian"), "{reasons:?}");
}

// The audit record and its durability.

#[test]
fn a_refusal_is_answered_and_audited_with_the_same_words() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let elsewhere = h.leader(ALICE);
    let reply = h.ask(elsewhere, get_request("tok"), None);
    let Response::Error { message } = reply.response else {
        panic!("answered {:?}", reply.response);
    };
    let record = h.world.lock().records_of("get").pop().unwrap();
    assert_eq!(record["outcome"], "deny");
    assert_eq!(record["reason"], message.as_str());
    assert_eq!(record["leader"], leader);
    assert_eq!(record["peer"]["pid"], elsewhere);
}

#[test]
fn a_put_whose_record_cannot_be_written_is_refused_and_not_stored() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    h.world.lock().fail_audit_write = true;
    let reply = h.ask(
        leader,
        put_request("tok", None, None),
        Some(bytes(b"s3cret")),
    );
    let Response::Error { message } = reply.response else {
        panic!("answered {:?}", reply.response);
    };
    assert!(message.ends_with("put refused"), "{message}");
    assert!(h.core.vault.is_empty());
}

#[test]
fn a_put_whose_record_cannot_be_synced_is_undone_while_revoke_still_answers() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    h.stored(leader, "kept");
    h.world.lock().fail_commit = true;
    let reply = h.ask(
        leader,
        put_request("tok", None, None),
        Some(bytes(b"s3cret")),
    );
    assert!(matches!(reply.response, Response::Error { .. }));
    assert!(!h.holds_secret(ALICE, "tok"), "undone");
    let reply = h.ask(leader, Request::Revoke { name: name("kept") }, None);
    assert!(matches!(reply.response, Response::Revoked { .. }));
}

#[test]
fn a_malformed_message_is_audited() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let peer = Some(h.peer(leader));
    h.send(Msg::Malformed {
        peer,
        reason: "malformed message: expected value".to_owned(),
    });
    let record = h.world.lock().records_of("malformed").pop().unwrap();
    assert_eq!(record["outcome"], "deny");
    assert_eq!(record["reason"], "malformed message: expected value");
}

// Describing.

#[test]
fn list_shows_only_the_callers_secrets_with_holders_and_ttl() {
    let mut h = Harness::new();
    let (alice, bob) = (h.leader(ALICE), h.leader(BOB));
    let ttl = put_request("b-ttl", None, Some(100));
    h.try_request(alice, ttl, Some(bytes(b"s3cret"))).unwrap();
    h.stored(alice, "a");
    h.stored(bob, "bobs");
    let holder = h.member(alice);
    h.holds(holder, &["a"]);
    h.advance(Duration::from_secs(30));
    let reply = h.try_request(alice, Request::List {}, None).unwrap();
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
    assert!(!h.world.lock().kernel.armed);
    assert!(!h.status().tamper_armed);
}
