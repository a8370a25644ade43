//! Issue 27, items 1 and 2: no process of a guarded session is traced from
//! outside it, and a session stays guarded from its first secret until its
//! leader exits, whatever wiped its secrets. A tracer needs no memory access
//! to harvest: with registers and system calls alone it can make a shell
//! exec a script that asks for a secret. Each attacker here is `nobody`,
//! the session's own user, from a session of its own.

use std::{os::unix::process::ExitStatusExt, time::Duration};

use e2e::{Guardian, Session, Stop, Tracer, is_alive, put_marker, read_attack, wait_until};

/// `tracer`, a seize of `target`, was stopped as `stop` says: killed before
/// the seize returned, or (BPF LSM) refused with an error, its caller alive.
fn assert_seize_stopped(stop: Stop, tracer: Tracer, target: i32) {
    assert!(!tracer.is_attached(target), "{}", tracer.said);
    let said = tracer.said.clone();
    let status = tracer.wait();
    match stop {
        Stop::Killed => assert_eq!(status.signal(), Some(libc::SIGKILL), "{said}"),
        Stop::Denied => {
            assert_eq!(status.signal(), None, "killed: {said}");
            assert!(said.starts_with("ptrace returned -1 "), "{said}");
        }
    }
}

/// `put tok` in the session: (exit code, stderr).
fn try_put(session: &mut Session) -> (i32, String) {
    let (rc, _, err) = session.run("printf %s v4lue | $NS put tok");
    (rc, err)
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn issue_27_a_put_from_a_session_traced_from_outside_is_refused_naming_the_tracer() {
    let guardian = Guardian::start("traced-put");
    let mut session = Session::start_as_nobody(&guardian);
    let leader = session.leader();
    let tracer = Tracer::seize(leader, true);
    assert!(
        tracer.is_attached(leader),
        "the seize of a shell holding nothing is allowed: {}",
        tracer.said
    );

    let (rc, err) = try_put(&mut session);
    assert_ne!(rc, 0, "a put from a traced session was stored");
    let named = format!(
        "PID {leader} of this session is traced by PID {}",
        tracer.pid()
    );
    assert!(err.contains(&named), "{err}");
    let (_, out, _) = session.run("$NS list");
    assert!(String::from_utf8_lossy(&out).contains("(no secrets)"));
    let refused = guardian.audit_of("put");
    assert_eq!(refused[0]["outcome"], "deny", "{refused:?}");
    assert!(
        refused[0]["reason"].as_str().unwrap().contains(&named),
        "{refused:?}"
    );
    assert!(is_alive(tracer.pid()), "refusing the put needs no kill");

    tracer.wait();
    let (rc, err) = try_put(&mut session);
    assert_eq!(rc, 0, "untraced again, the put is stored: {err}");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn issue_27_a_put_is_refused_while_any_member_of_the_session_is_traced_from_outside() {
    let guardian = Guardian::start("traced-member");
    let mut session = Session::start_as_nobody(&guardian);
    let (rc, out, _) = session.run("sleep 1000 > /dev/null 2>&1 & echo $!");
    assert_eq!(rc, 0);
    let member: i32 = String::from_utf8_lossy(&out).trim().parse().unwrap();
    let tracer = Tracer::seize(member, true);
    assert!(tracer.is_attached(member), "{}", tracer.said);

    let (rc, err) = try_put(&mut session);
    assert_ne!(rc, 0, "stored while a member was traced from outside");
    assert!(
        err.contains(&format!(
            "PID {member} of this session is traced by PID {}",
            tracer.pid()
        )),
        "{err}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn issue_27_a_session_wiped_by_a_tamper_stays_guarded_against_the_next_attacker() {
    let guardian = Guardian::start("guarded-after-tamper");
    let mut session = Session::start_as_nobody(&guardian);
    let leader = session.leader();
    put_marker(&mut session, "tok");
    // The value in the shell's own memory, as `x=$(get)` leaves it.
    let (rc, _, err) = session.run("x=$($NS get tok)");
    assert_eq!(rc, 0, "{err}");

    // The sacrificial attacker: stopped, and the session wiped.
    let stop = Stop::armed_by(&guardian);
    assert_seize_stopped(stop, Tracer::seize(leader, true), leader);
    let wiped = wait_until(Duration::from_secs(5), || {
        !guardian.audit_of("trigger").is_empty()
    });
    assert!(wiped, "{:?}", guardian.audit_records());

    // The attacker right behind it finds the session still guarded.
    assert_seize_stopped(stop, Tracer::seize(leader, true), leader);
    let loot = session.dir().join("loot");
    let read = read_attack("mem", leader, &loot, &[], true);
    stop.assert_stopped_at(&read, "open");
    assert!(
        std::fs::read(&loot)
            .unwrap_or_default()
            .iter()
            .all(|&b| b == 0),
        "a byte of the shell's memory was copied"
    );
    let status = guardian.status();
    assert_eq!(
        (status["secrets"].as_u64(), status["leaders"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(status["tamper_armed"], true);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn issue_27_a_session_wiped_by_a_revoke_from_outside_stays_guarded_until_its_leader_exits() {
    let guardian = Guardian::start("guarded-after-revoke");
    let mut session = Session::start_as_nobody(&guardian);
    let leader = session.leader();
    put_marker(&mut session, "tok");
    let mut outside = Session::start_as_nobody(&guardian);
    let (rc, _, err) = outside.run("$NS revoke tok");
    assert_eq!(rc, 0, "the panic button works from another terminal: {err}");

    let loot = session.dir().join("loot");
    let read = read_attack("mem", leader, &loot, &[], true);
    Stop::armed_by(&guardian).assert_stopped_at(&read, "open");
    assert_eq!(guardian.status()["leaders"], 1);

    session.type_line("exit");
    let unguarded = wait_until(Duration::from_secs(5), || {
        guardian.status()["leaders"] == 0 && guardian.status()["tamper_armed"] == false
    });
    assert!(unguarded, "{}", guardian.status());
}
