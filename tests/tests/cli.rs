//! The command line as a user meets it: an exit code for each kind of
//! failure, `put --replace`, `list --all`/`--json`, `status`, the surprises
//! a first user ran into, and the guardian under systemd (readiness and
//! journal lines).

use std::{
    fs,
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    process::Command,
    time::Duration,
};

use e2e::{Guardian, Session, bin, is_alive, scratch_dir, start_sleeping_holder, wait_until};
use serde_json::Value;

/// Runs `script` in `session`; returns its exit code and stderr.
fn rc(session: &mut Session, script: &str) -> (i32, String) {
    let (rc, _, err) = session.run(script);
    (rc, err)
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn each_kind_of_failure_has_its_exit_code() {
    let guardian = Guardian::start("exit-codes");
    let mut me = Session::start(&guardian);
    let mut nobody = Session::start_as_nobody(&guardian);
    assert_eq!(rc(&mut me, "printf %s v | $NS put tok").0, 0);

    // 2: usage, with clap's message.
    let (code, err) = rc(&mut me, "printf %s v | $NS put x --ttl -5m");
    assert_eq!(
        (code, err.contains("cannot be negative")),
        (2, true),
        "{err}"
    );
    assert_eq!(rc(&mut me, "printf %s v | $NS put x --bind 0").0, 2);
    // 1: a reader that went away is an error, not a panic (101).
    let (code, err) = rc(
        &mut me,
        "$NS status | (exec 0<&-; sleep 0.3); echo ${PIPESTATUS[0]} >&2",
    );
    let failed_plainly = err.trim_end().ends_with('1') && !err.contains("panicked");
    assert!(code == 0 && failed_plainly, "{err}");
    // 3: nothing listens there.
    let (code, err) = rc(&mut me, "$NS list --socket /run/no-such-guardian.sock");
    assert_eq!(
        (code, err.contains("cannot reach the guardian")),
        (3, true),
        "{err}"
    );
    // 4: a socket this user may not reach, and root-only commands.
    let locked = scratch_dir("locked-socket");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    let socket = locked.join("guardian.sock");
    let (code, err) = rc(
        &mut nobody,
        &format!("$NS list --socket {}", socket.display()),
    );
    assert_eq!(
        (code, err.contains("permission denied")),
        (4, true),
        "{err}"
    );
    assert_eq!(rc(&mut nobody, "$NS list --all").0, 4);
    assert_eq!(rc(&mut nobody, "$NS audit tail").0, 4);
    // 5: refused by the guardian.
    let (code, err) = rc(&mut me, "printf %s v | $NS put init --bind 1");
    assert_eq!((code, err.contains("PID 1")), (5, true), "{err}");
    assert_eq!(rc(&mut me, "printf %s v | $NS put tok").0, 5, "exists");
    // 6: no such secret.
    assert_eq!(rc(&mut me, "$NS get nothing").0, 6);
    assert_eq!(rc(&mut me, "$NS exec --env A=nothing -- true").0, 6);
    // exec: 127 not found, 126 not executable, else the command's own.
    let (code, err) = rc(&mut me, "$NS exec --env A=tok -- no-such-command-here");
    assert_eq!(
        (code, err.contains("command not found")),
        (127, true),
        "{err}"
    );
    fs::write(me.dir().join("plain.txt"), "not a program\n").unwrap();
    assert_eq!(rc(&mut me, "$NS exec --env A=tok -- ./plain.txt").0, 126);
    assert_eq!(rc(&mut me, "$NS exec --env A=tok -- sh -c 'exit 7'").0, 7);
    assert_eq!(rc(&mut me, "$NS get tok").0, 0);
    let _ = fs::remove_dir_all(&locked);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn replace_gives_a_new_value_under_the_binding_and_kills_the_old_values_holders() {
    let guardian = Guardian::start("replace");
    let mut me = Session::start(&guardian);
    assert_eq!(rc(&mut me, "printf %s old | $NS put tok --ttl 1h").0, 0);
    let holder = start_sleeping_holder(&mut me, "tok");
    let (code, err) = rc(&mut me, "printf %s new | $NS put tok --replace");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("killed 1 holder"), "{err}");
    assert!(
        wait_until(Duration::from_secs(5), || !is_alive(holder)),
        "the old value's holder lives on"
    );
    assert_eq!(me.run("$NS get tok").1, b"new");
    let (_, out, _) = me.run("$NS list --json");
    let listed: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(listed[0]["leader"], me.leader());
    let left = listed[0]["ttl_left_secs"].as_u64().unwrap();
    assert!(
        (3500..=3600).contains(&left),
        "the TTL was not kept: {left}"
    );
    // A holder of the value cannot replace it: it would die with it, unsure.
    let holder = start_sleeping_holder(&mut me, "tok");
    let (code, err) = rc(
        &mut me,
        "$NS exec --env T=tok -- sh -c 'printf %s x | $NS put tok --replace'",
    );
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("would be killed with it"), "{err}");
    assert!(is_alive(holder));
    // Quiet, and refused from another session of the same user.
    let (code, err) = rc(&mut me, "printf %s newer | $NS put tok --replace --quiet");
    // Nothing of its own on stderr (bash may report the holder it killed).
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("replaced"), "{err}");
    let mut other = Session::start(&guardian);
    let (code, err) = rc(&mut other, "printf %s planted | $NS put tok --replace");
    assert_eq!(code, 5, "{err}");
    assert_eq!(me.run("$NS get tok").1, b"newer");
    let replaced = guardian.audit_of("replace");
    let outcomes: Vec<&str> = replaced
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["allow", "deny", "allow", "deny"], "{replaced:?}");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn list_and_status_speak_in_human_units_and_json_in_absolute_times() {
    let guardian = Guardian::start("list-all");
    let mut me = Session::start(&guardian);
    let mut nobody = Session::start_as_nobody(&guardian);
    let long = "n".repeat(51);
    assert_eq!(
        rc(&mut me, &format!("printf %s v | $NS put {long} --ttl 2h")).0,
        0
    );
    assert_eq!(rc(&mut me, "printf %s v | $NS put short").0, 0);
    assert_eq!(rc(&mut nobody, "printf %s v | $NS put theirs").0, 0);
    let holder = start_sleeping_holder(&mut me, "short");

    let (_, out, _) = me.run("$NS list");
    let table = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let leader = me.leader().to_string();
    let leader_end = |line: &str| line.find(&leader).map(|at| at + leader.len());
    assert_eq!(leader_end(lines[1]), leader_end(lines[2]), "{table}");
    assert!(
        lines[1].ends_with("1h 59m") || lines[1].ends_with("2h"),
        "{table}"
    );
    assert!(!table.contains("theirs"), "another user's secret listed");

    let (_, out, _) = me.run("$NS list --all --json");
    let all: Value = serde_json::from_slice(&out).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [long.as_str(), "short", "theirs"]);
    assert_eq!(all[2]["uid"], 65534);
    assert_eq!(all[1]["holder_pids"], serde_json::json!([holder]));
    let stored = all[0]["stored_at"].as_str().unwrap();
    let expires = all[0]["expires_at"].as_str().unwrap();
    let at = |text: &str| humantime_secs(text);
    assert!(
        (7190..=7210).contains(&(at(expires) - at(stored))),
        "{stored} {expires}"
    );
    assert!(all[1]["expires_at"].is_null());

    let (_, out, _) = me.run("$NS status");
    let status = String::from_utf8(out).unwrap();
    assert!(
        status.contains(&format!("socket            {}", guardian.socket.display())),
        "{status}"
    );
    assert!(
        status.contains(&guardian.audit.display().to_string()),
        "{status}"
    );
    assert!(status.contains(", up "), "{status}");
}

/// Seconds since the epoch of an RFC 3339 time `YYYY-MM-DDTHH:MM:SSZ`,
/// by `date`, so the test does not trust the code it checks.
fn humantime_secs(text: &str) -> i64 {
    let output = Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_surprises_of_a_first_user_are_explained() {
    let guardian = Guardian::start("surprises");
    let mut me = Session::start(&guardian);
    // `setsid put` would bind to itself and be wiped as it exits.
    let (code, err) = rc(&mut me, "printf %s v | setsid --wait $NS put lone");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("--bind $$"), "{err}");
    assert_eq!(guardian.status()["secrets"], 0);
    // A thread is named as one.
    let (_, out, _) = me.run(
        "python3 -c 'import threading,time; threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); time.sleep(60)' & \
         for i in $(seq 100); do [ $(ls /proc/$!/task | wc -l) -ge 2 ] && break; sleep 0.05; done; \
         ls /proc/$!/task | sort -n | tail -1; echo $!",
    );
    let text = String::from_utf8(out).unwrap();
    let mut ids = text.lines();
    let (tid, pid) = (ids.next().unwrap(), ids.next().unwrap());
    assert_ne!(tid, pid, "no second thread");
    let (code, err) = rc(&mut me, &format!("printf %s v | $NS put t --bind {tid}"));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains(&format!("thread of process {pid}")), "{err}");
    let _ = me.run(&format!("kill {pid}"));
    // Binding to the shell itself, as the hint says, works.
    let (code, err) = rc(&mut me, "printf %s v | $NS put shell --bind $$");
    assert_eq!(code, 0, "{err}");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_second_guardian_on_the_socket_stops_before_it_opens_or_loads_anything() {
    let guardian = Guardian::start("second");
    let dir = scratch_dir("second-guardian");
    let audit = dir.join("audit/audit.jsonl");
    let output = Command::new(bin())
        .args(["guard", "--socket"])
        .arg(&guardian.socket)
        .arg("--audit")
        .arg(&audit)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(err.contains("already listening"), "{err}");
    assert!(!audit.exists(), "it opened an audit log");
    assert!(!err.contains("eBPF"), "it loaded eBPF first: {err}");
    assert!(
        guardian.cli(["status"]).status.success(),
        "the first guardian was hurt"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn under_systemd_it_says_ready_once_clients_can_connect_and_logs_journal_lines() {
    let dir = scratch_dir("notify");
    let notify = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let guardian = Guardian::start_as_systemd_would("systemd", &notify);
    let mut message = [0u8; 512];
    let len = listener
        .recv(&mut message)
        .expect("no READY=1 from the guardian");
    let message = String::from_utf8_lossy(&message[..len]).into_owned();
    assert!(message.lines().any(|line| line == "READY=1"), "{message}");
    assert!(message.contains("STATUS=listening on"), "{message}");
    // Each line led by its syslog priority (`<6>` info, `<4>` warning), with
    // no timestamp and no colour: the journal adds its own.
    let log = guardian.log();
    assert!(log.contains("<6>"), "{log}");
    let journal_line = |line: &str| {
        let bytes = line.as_bytes();
        bytes.len() > 3 && bytes[0] == b'<' && (b'3'..=b'7').contains(&bytes[1]) && bytes[2] == b'>'
    };
    assert!(log.lines().all(journal_line), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in the journal: {log}"
    );
    // A stop is clean: exit 0, as systemd counts success, and nothing said
    // but the journal's lines (no panic, no supervisor complaint).
    let mut guardian = guardian;
    let stopped = guardian.stop();
    let log = guardian.log();
    assert!(stopped.success(), "{stopped:?}: {log}");
    assert!(log.lines().all(journal_line), "{log}");
    let _ = fs::remove_dir_all(&dir);
}
