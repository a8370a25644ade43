//! Hostile local users against a real guardian (issue 11): a request that
//! tried to overflow the clock, a connection whose process is gone and whose
//! PID a victim's process now has, a request that asks for the same big
//! secret thousands of times, connection floods, and a holder tree larger
//! than the descriptor limit the guardian was started with. Each attacker
//! runs as an unprivileged user.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{Guardian, Session, abuser_in, supervisor_of, wait_until};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

const NOBODY: &str = "65534";
/// A second unprivileged user, for "another user still gets served".
const OTHER: &str = "12345";

/// The abuser helper (tests/helpers/abuser.py) as `uid`.
fn abuser(uid: &str) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/abuser.py");
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "/usr/bin/python3",
        ])
        .arg(script);
    command
}

/// Runs the CLI as `uid` and returns how long it took to succeed; an error
/// if it failed or took longer than `limit` (then it is killed, so a stalled
/// guardian fails the test instead of hanging it).
fn answers_within(guardian: &Guardian, uid: &str, args: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    let mut child = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(e2e::bin())
        .args(args)
        .env("NINGEN_SHIKKAKU_SOCKET", &guardian.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run cli");
    let exited = wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
    let took = start.elapsed();
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("reap cli");
    assert!(exited, "{args:?} took more than {limit:?}");
    assert!(status.success(), "{args:?} failed: {status}");
    took
}

/// The soft descriptor limit of `pid`, from /proc/PID/limits.
fn open_files_limit(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3)?.parse().ok())
        .unwrap()
}

const CAP_SYS_RESOURCE: u32 = 24;

/// True if this process has capability `cap` in its effective set.
fn has_capability(cap: u32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap();
    effective & (1 << cap) != 0
}

fn signal(pid: i32, signal: Signal) {
    nix::sys::signal::kill(Pid::from_raw(pid), signal).expect("signal");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_ttl_past_the_end_of_time_is_refused_and_the_guardian_lives_on() {
    let mut guardian = Guardian::start("ttl-overflow");
    let mut session = Session::start_as_nobody(&guardian);
    let (rc, _, err) = session.run("printf x | $NS put t --ttl 300000000000y");
    assert_ne!(rc, 0);
    assert!(err.contains("TTL"), "{err}");
    assert!(guardian.is_running(), "{}", guardian.log());
    let header = r#"{"op":"put","name":"t","bind":null,"ttl_secs":18446744073709551615,"len":1}"#;
    let reply = abuser_in(&mut session, &format!("request '{header}' 1"));
    assert_eq!(reply["reply"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("TTL"),
        "{reply}"
    );
    assert!(guardian.is_running(), "{}", guardian.log());
    assert_eq!(guardian.status()["secrets"], 0);
    let refused = guardian.audit_of("malformed");
    assert!(
        refused
            .iter()
            .any(|r| r["reason"].as_str().unwrap().contains("TTL")),
        "the refusal is audited: {refused:?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_connection_whose_process_is_gone_is_refused_even_when_its_pid_is_reused() {
    let guardian = Guardian::start("pid-reuse");
    let mut victim = Session::start_as_nobody(&guardian);
    let (rc, _, err) = victim.run("printf hunter2 | $NS put tok");
    assert_eq!(rc, 0, "{err}");
    // Hold the guardian (and the supervisor that would continue it) so the
    // attacker's connection waits in the backlog, as it would behind a full
    // set of connections.
    let supervisor = supervisor_of(guardian.pid());
    signal(supervisor, Signal::SIGSTOP);
    signal(guardian.pid(), Signal::SIGSTOP);
    let mut attacker = abuser(NOBODY)
        .arg("orphan")
        .arg(&guardian.socket)
        .arg(r#"{"op":"get","name":"tok"}"#)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start attacker");
    let mut lines = BufReader::new(attacker.stdout.take().unwrap()).lines();
    let orphan: i32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    // Give the orphan's PID to a process of the victim's session.
    let reused = (0..50).any(|attempt| {
        fs::write("/proc/sys/kernel/ns_last_pid", (orphan - 1).to_string()).unwrap();
        let file = format!("reused{attempt}");
        victim.spawn(&format!("echo $BASHPID > {file}; exec sleep 30"));
        wait_until(Duration::from_secs(5), || !victim.pids_in(&file).is_empty());
        victim.pids_in(&file) == [orphan]
    });
    signal(guardian.pid(), Signal::SIGCONT);
    signal(supervisor, Signal::SIGCONT);
    assert!(
        reused,
        "could not hand PID {orphan} to the victim's session"
    );
    writeln!(attacker.stdin.as_mut().unwrap()).unwrap();
    let reply: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = attacker.wait();
    assert_ne!(
        reply["reply"], "secrets",
        "the secret went to a dead peer's connection: {reply}"
    );
    assert!(!reply.to_string().contains("hunter2"), "{reply}");
    let granted = guardian
        .audit_of("get")
        .into_iter()
        .filter(|r| r["outcome"] == "allow")
        .count();
    assert_eq!(granted, 0, "{:?}", guardian.audit_records());
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn asking_for_one_big_secret_thousands_of_times_locks_nothing() {
    let guardian = Guardian::start("amplify");
    let mut session = Session::start_as_nobody(&guardian);
    let (rc, _, err) = session.run("head -c 1048576 /dev/zero | tr '\\0' a | $NS put big");
    assert_eq!(rc, 0, "{err}");
    for (copies, refusal) in [(3000, "1 to 64 secrets"), (40, "asked for twice")] {
        let names = vec!["big"; copies];
        let header = serde_json::json!({ "op": "exec", "names": names }).to_string();
        let start = Instant::now();
        let reply = abuser_in(&mut session, &format!("request '{header}' 0"));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert_eq!(reply["reply"], "error", "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(refusal), "{reply}");
    }
    for n in 1..5 {
        let (rc, _, err) = session.run(&format!(
            "head -c 1048576 /dev/zero | tr '\\0' b | $NS put big{n}"
        ));
        assert_eq!(rc, 0, "{err}");
    }
    let (rc, _, err) = session
        .run("$NS exec --env A=big --env B=big1 --env C=big2 --env D=big3 --env E=big4 -- true");
    assert_ne!(rc, 0, "five 1 MiB secrets in one reply");
    assert!(err.contains("more than one reply carries"), "{err}");
    let locked = guardian.status()["locked_bytes"].as_u64().unwrap();
    assert!(locked <= 6 << 20, "{locked} bytes locked");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_connection_flood_from_one_user_leaves_every_other_user_served() {
    let guardian = Guardian::start("flood");
    let mut flood = abuser(NOBODY)
        .arg("flood")
        .arg(&guardian.socket)
        .args(["1500", "300", "6"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start flood");
    let mut lines = BufReader::new(flood.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open");
    for args in [&["status"][..], &["wipe", "--all"][..], &["status"][..]] {
        answers_within(&guardian, OTHER, args, Duration::from_secs(2));
    }
    let counts: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = flood.wait();
    // All but the user's 32 slots are refused at once.
    let opened = counts["opened"].as_u64().unwrap();
    assert!(
        opened > 64,
        "the flood could open only {opened} connections"
    );
    assert!(
        counts["refused"].as_u64().unwrap() >= opened - 40,
        "{counts}"
    );
    let refusals = guardian.log().matches("connection refused").count();
    assert!(
        refusals <= 2,
        "refusals are logged once per interval: {refusals}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_holder_tree_larger_than_the_descriptor_limit_dies_whole() {
    const CHILDREN: usize = 1100;
    let guardian = Guardian::start_with_open_files("fd-teardown", 1024);
    // Root raises its own limit only with CAP_SYS_RESOURCE, which some
    // containers withhold; either way the tree must die whole.
    let limit = open_files_limit(guardian.pid());
    let may_raise = has_capability(CAP_SYS_RESOURCE);
    assert!(
        limit >= 1024 && (!may_raise || limit > 16 * CHILDREN as u64),
        "limit {limit}, CAP_SYS_RESOURCE {may_raise}"
    );
    let mut session = Session::start_as_nobody(&guardian);
    let (rc, _, err) = session.run("printf hunter2 | $NS put tok");
    assert_eq!(rc, 0, "{err}");
    session.spawn(&format!(
        "$NS exec --env T=tok -- bash -c 'for i in $(seq {CHILDREN}); do sleep 1000 & done; \
         echo $$ > tree; wait'"
    ));
    let children = || -> Vec<i32> {
        let Some(&tree) = session.pids_in("tree").first() else {
            return Vec::new();
        };
        fs::read_to_string(format!("/proc/{tree}/task/{tree}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || children().len() == CHILDREN),
        "the tree did not grow: {} children",
        children().len()
    );
    let mut tree = children();
    tree.extend(session.pids_in("tree"));
    answers_within(&guardian, OTHER, &["status"], Duration::from_secs(2));

    session.signal_leader(Signal::SIGKILL);
    let dead = wait_until(Duration::from_secs(20), || {
        tree.iter().all(|&pid| !e2e::is_alive(pid))
    });
    let survivors = tree.iter().filter(|&&pid| e2e::is_alive(pid)).count();
    assert!(dead, "{survivors} of {} holders survived", tree.len());
    let recorded = wait_until(Duration::from_secs(10), || {
        !guardian.audit_of("trigger").is_empty()
    });
    assert!(recorded, "{}", guardian.log());
    let trigger = guardian.audit_of("trigger").pop().unwrap();
    assert_eq!(trigger["outcome"], "wiped", "{trigger}");
    assert!(
        !guardian.log().contains("Too many open files"),
        "{}",
        guardian.log()
    );
    answers_within(&guardian, OTHER, &["status"], Duration::from_secs(2));
}
