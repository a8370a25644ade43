//! Which environments anyone may read (issue 24): those that hold no value.

use super::*;

/// The stamp of `pid`'s environment, and whether it is listed as clean.
fn environ_of(h: &Harness, pid: i32) -> (Option<u64>, bool) {
    let world = h.world.lock();
    let stamp = world.kernel.environ_stamps.get(&pid).copied();
    let clean = stamp.is_some_and(|stamp| world.kernel.clean_environs.contains(&stamp));
    (stamp, clean)
}

fn set_environ(h: &Harness, pid: i32, environ: &[u8]) {
    h.world.lock().procs.get_mut(&pid).unwrap().environ = environ.to_vec();
}

/// Ward `pid` exec'd with `environ`, which the kernel stamped `stamp`.
fn exec(h: &mut Harness, pid: i32, environ: &[u8], stamp: u64) {
    set_environ(h, pid, environ);
    h.world.lock().kernel.environ_stamps.insert(pid, stamp);
    let mut event = h.event(EventKind::EnvironChanged, pid, 0);
    event.request = stamp;
    h.events(vec![event]);
}

#[test]
fn a_put_lists_every_member_environment_that_holds_no_value_as_clean() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let exported = h.member(leader);
    let plain = h.member(leader);
    set_environ(&h, leader, b"HOME=/home/alice\0");
    set_environ(&h, exported, b"TOKEN=s3cret\0");
    h.stored(leader, "tok");
    assert!(environ_of(&h, leader).1, "the shell's own environment");
    assert!(environ_of(&h, plain).1);
    let (stamp, clean) = environ_of(&h, exported);
    assert!(stamp.is_some() && !clean, "it carries the value: guarded");
}

#[test]
fn an_exec_is_read_once_and_listed_only_while_its_stamp_stands() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let child = h.member(leader);
    exec(&mut h, child, b"T_FILE=/proc/self/fd/3\0", 7);
    assert_eq!(environ_of(&h, child), (Some(7), true), "a --file holder");
    exec(&mut h, child, b"T=s3cret\0", 8);
    assert_eq!(environ_of(&h, child), (Some(8), false), "an --env holder");

    // The event of an exec the ward has already left behind lists nothing.
    set_environ(&h, child, b"PLAIN=1\0");
    let mut stale = h.event(EventKind::EnvironChanged, child, 0);
    stale.request = 7;
    h.world.lock().kernel.clean_environs.clear();
    h.events(vec![stale]);
    assert!(h.world.lock().kernel.clean_environs.is_empty());
}

/// Whether an environment is guarded shows to whoever reads it: were
/// Bob's values looked for in Alice's, she could test guesses at them.
#[test]
fn only_the_ward_owner_s_values_are_looked_for_in_its_environment() {
    let mut h = Harness::new();
    h.storing(BOB);
    let leader = h.leader(ALICE);
    let guess = h.member(leader);
    set_environ(&h, guess, b"GUESS=s3cret\0");
    let put = Request::Put {
        name: name("mine"),
        bind: None,
        ttl_secs: None,
        len: 10,
        replace: false,
    };
    let client = h.member(leader);
    h.try_request(client, put, Some(bytes(b"n3xt-value")))
        .unwrap();
    let (stamp, clean) = environ_of(&h, guess);
    assert!(clean, "Bob's value was looked for in Alice's environment");

    // Alice's own value, stored from another of her sessions, is found at
    // the ward's next exec.
    let other = h.leader(ALICE);
    h.stored(other, "tok");
    exec(&mut h, guess, b"GUESS=s3cret\0", stamp.unwrap() + 1);
    assert!(!environ_of(&h, guess).1, "her own value in it is guarded");
}

/// A shell that exported `T=$(get tok)` hands the value to what it starts
/// after a revoke too: the session keeps looking for it until its leader
/// exits, though the vault holds it no more.
#[test]
fn a_value_wiped_while_its_session_lives_is_still_looked_for_in_new_environments() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let child = h.member(leader);
    h.revoke(leader, "tok");
    assert!(!h.holds_secret(ALICE, "tok"));
    exec(&mut h, child, b"T=s3cret\0", 7);
    assert!(!environ_of(&h, child).1, "the wiped value: guarded");
    exec(&mut h, child, b"T=other\0", 8);
    assert!(environ_of(&h, child).1, "anything else: clean");

    // A ward of another of Alice's sessions (a tmux server started from it)
    // that got the value from this one is searched for it as well.
    let other = h.leader(ALICE);
    let elsewhere = h.member(other);
    set_environ(&h, elsewhere, b"T=s3cret\0");
    assert!(
        !environ_of(&h, elsewhere).1,
        "retired in another session: guarded"
    );
}

#[test]
fn a_new_value_already_in_a_clean_environment_takes_it_off_the_list() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let member = h.member(leader);
    set_environ(&h, member, b"NEXT=n3xt-value\0");
    h.stored(leader, "other");
    assert!(environ_of(&h, member).1, "clean while no value is in it");
    let client = h.member(leader);
    let put = Request::Put {
        name: name("next"),
        bind: None,
        ttl_secs: None,
        len: 10,
        replace: false,
    };
    h.try_request(client, put, Some(bytes(b"n3xt-value")))
        .unwrap();
    assert!(
        !environ_of(&h, member).1,
        "the exported value is guarded now"
    );
}

#[test]
fn an_environment_read_stopped_before_its_first_byte_wipes_nothing_by_default() {
    // Stopped at the open (BPF LSM, or without the address-space-lock
    // program; an io_uring one at its completion) or at the first read
    // through it (the tracepoint mode).
    for kind in [
        TamperSyscall::OpenEnviron,
        TamperSyscall::ReadEnviron,
        TamperSyscall::IoUringOpenEnviron,
    ] {
        let mut h = Harness::new();
        let (leader, holder) = h.session_holding(ALICE);
        h.tamper_by(4242, holder, kind, leader, 0);
        assert!(h.holds_secret(ALICE, "tok"), "{kind:?}");
        assert!(!h.was_killed(holder));
        let record = h.world.lock().records_of("tamper").pop().unwrap();
        let reason = record["reason"].as_str().unwrap();
        assert!(
            reason.contains("before any byte was copied; no secret wiped (policy: audit)"),
            "{reason}"
        );

        let config = Config {
            on_environ_read: TamperResponse::Wipe,
            ..Config::default()
        };
        let mut h = Harness::with(Parts::ALL, config);
        let (leader, holder) = h.session_holding(ALICE);
        h.tamper_by(4242, holder, kind, leader, 0);
        assert!(!h.holds_secret(ALICE, "tok"), "on_environ_read = \"wipe\"");
    }
}
