//! Tamper attempts stopped by the kernel.

use super::*;

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
fn two_attempts_on_one_holder_make_one_trigger_record() {
    let mut h = Harness::new();
    let (_, holder) = h.session_holding(ALICE);
    h.tamper(4242, holder);
    h.tamper(4242, holder);
    h.exit(holder);
    let world = h.world.lock();
    assert_eq!(
        world.records_of("tamper").len(),
        2,
        "each attempt is audited"
    );
    let triggers = world.records_of("trigger");
    assert_eq!(triggers.len(), 1, "one wipe, one record: {triggers:?}");
    assert_eq!(triggers[0]["names"][0], "tok");
}

#[test]
fn a_killed_attacker_is_named_by_the_executable_the_kernel_saw() {
    let mut h = Harness::new();
    let (_, holder) = h.session_holding(ALICE);
    let mut attempt = event(EventKind::Tamper, 4242, holder);
    attempt.syscall = TamperSyscall::ProcessVmReadv as u32;
    attempt.exe[..10].copy_from_slice(b"python3.11");
    h.events(vec![attempt]);
    // Not named by the kernel either: unknown.
    h.tamper(4243, holder);
    // Alive, and still the program the kernel named: its path.
    let mut attempt = event(EventKind::Tamper, holder, holder);
    attempt.syscall = TamperSyscall::ProcessVmReadv as u32;
    attempt.exe[..4].copy_from_slice(b"fake");
    h.events(vec![attempt]);
    let records = h.world.lock().records_of("tamper");
    let exe = |index: usize| records[index]["peer"]["exe"].as_str().unwrap().to_owned();
    assert_eq!(
        exe(0),
        "python3.11 (name only: it died before its path was read)"
    );
    assert_eq!(exe(1), "?");
    assert_eq!(exe(2), "/usr/bin/fake");
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

#[test]
fn an_attempt_on_a_session_member_wipes_what_its_leader_bound() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    h.stored(leader, "other");
    let shell = h.member(leader);
    // Memory: an environment read wipes nothing by default (tests/environ.rs).
    h.tamper_by(4242, shell, TamperSyscall::OpenMem, leader, 0);
    assert!(!h.holds_secret(ALICE, "tok") && !h.holds_secret(ALICE, "other"));
    let record = h.world.lock().records_of("tamper").pop().unwrap();
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "open of mem (request 0) on session member {shell};"
        )),
        "{reason}"
    );
}

#[test]
fn an_attempt_the_kernel_refused_is_recorded_and_wipes_nothing() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    let refused = guardian_ebpf::flags::REFUSED_BY_KERNEL | guardian_ebpf::flags::COMPAT;
    h.tamper_by(4242, holder, TamperSyscall::Ptrace, leader, refused);
    assert!(h.holds_secret(ALICE, "tok"));
    assert!(!h.was_killed(holder));
    let record = h.world.lock().records_of("tamper").pop().unwrap();
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.starts_with("ptrace (32-bit)"), "{reason}");
    assert!(reason.contains("refused by the kernel"), "{reason}");
}

#[test]
fn an_attach_that_wipes_nothing_leaves_its_target_running() {
    let config = Config {
        tamper_response: TamperResponse::Audit,
        ..Config::default()
    };
    let mut h = Harness::with(Parts::ALL, config);
    let (leader, holder) = h.session_holding(ALICE);
    h.tamper_by(4242, holder, TamperSyscall::Ptrace, leader, 0);
    h.tamper_by(4243, leader, TamperSyscall::Ptrace, leader, 0);
    assert!(h.holds_secret(ALICE, "tok"));
    let world = h.world.lock();
    for pid in [holder, leader] {
        assert!(
            world.effects.contains(&Effect::ContinueIfStopped { pid }),
            "{pid} left stopped: {:?}",
            world.effects
        );
    }
}

#[test]
fn attempts_past_the_rate_limit_are_summed_up_while_they_come_and_wipe_nothing() {
    let mut h = Harness::new();
    let (_, holder) = h.session_holding(ALICE);
    h.world.lock().kernel.suppressed.insert(Uid(BOB), 500);
    h.world.lock().kernel.tamper_lost = 3;
    h.tamper(4242, GUARDIAN);
    h.advance(Duration::from_secs(1));
    h.world.lock().kernel.suppressed.insert(Uid(BOB), 700);
    h.advance(Duration::from_secs(1));
    h.advance(Duration::from_secs(5));
    let reasons: Vec<String> = h
        .world
        .lock()
        .records_of("tamper")
        .iter()
        .filter_map(|r| r["reason"].as_str().map(str::to_owned))
        .filter(|reason| !reason.contains("on guardian"))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].starts_with("500 more attempts by uid 1001"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("3 tamper records lost"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("200 more attempts by uid 1001"),
        "{reasons:?}"
    );
    assert_eq!(h.pending_timers(), 0, "no summary once the flood stops");
    assert!(h.holds_secret(ALICE, "tok"));
    assert!(!h.was_killed(holder));
    assert_eq!(h.status().tamper_limit.suppressed, 700);
}

#[test]
fn a_holder_whose_uids_changed_costs_its_grant_its_secrets() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    h.stored(leader, "other");
    h.tamper_by(holder, holder, TamperSyscall::Credentials, leader, 0);
    assert!(!h.holds_secret(ALICE, "tok"), "what it held is wiped");
    assert!(h.holds_secret(ALICE, "other"));
    let record = h.world.lock().records_of("tamper").pop().unwrap();
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.starts_with("credential change"), "{reason}");
}

/// Issue 27: the record says what was done to the caller; one a BPF LSM
/// hook refused lives on, and is never recorded as killed.
#[test]
fn an_attempt_denied_by_a_bpf_lsm_hook_is_recorded_as_denied_not_killed() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    let denied = guardian_ebpf::flags::DENIED;
    h.tamper_by(4242, holder, TamperSyscall::OpenEnviron, leader, denied);
    let record = h.world.lock().records_of("tamper").pop().unwrap();
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("denied with an error before any byte was copied; the caller lives"),
        "{reason}"
    );
    assert!(!reason.contains("SIGKILLed"), "{reason}");
}

/// Issue 27: a descriptor a killed caller took outlives it in a process
/// sharing its descriptor table, and the record does not claim otherwise.
#[test]
fn a_killed_pidfd_getfd_is_not_recorded_as_copying_nothing() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    h.tamper_by(4242, holder, TamperSyscall::PidfdGetfd, leader, 0);
    let record = h.world.lock().records_of("tamper").pop().unwrap();
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("a process sharing its descriptor table keeps the descriptor it took"),
        "{reason}"
    );
    assert!(!reason.contains("before any byte was copied"), "{reason}");
}
