//! The audit log: one record per attempt (even under 1000 concurrent
//! clients), a chain that `audit verify` checks and that catches edits,
//! deletions and swaps, no secret bytes, root-only reading, and a guardian that
//! refuses to hand out secrets it cannot log while still enforcing triggers.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use e2e::{Guardian, Session, bin, is_alive, random_bytes, start_sleeping_holder, wait_until};

fn verify(path: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(["audit", "verify", "--log"])
        .arg(path)
        .output()
        .unwrap()
}

/// One `status` request on a fresh connection; true if answered.
fn status_request(socket: &std::path::Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let body = br#"{"op":"status"}"#;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    let mut prefix = [0u8; 4];
    if stream.write_all(&frame).is_err() || stream.read_exact(&mut prefix).is_err() {
        return false;
    }
    let mut reply = vec![0u8; u32::from_le_bytes(prefix) as usize];
    stream.read_exact(&mut reply).is_ok() && reply.starts_with(br#"{"reply":"status""#)
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn every_attempt_is_recorded_once_and_the_chain_verifies() {
    let guardian = Guardian::start("audit-kinds");
    let mut session = Session::start(&guardian);
    let marker: String = random_bytes(16)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let steps = [
        format!("printf %s {marker} | $NS put tok"),
        "$NS get tok".to_owned(),
        "$NS exec --env T=tok -- true".to_owned(),
        "$NS list".to_owned(),
        "$NS status".to_owned(),
        "$NS get missing".to_owned(),
        "$NS revoke tok".to_owned(),
        "$NS wipe --all".to_owned(),
    ];
    for step in &steps {
        session.run(step);
    }
    let count = |action: &str| guardian.audit_of(action).len();
    for (action, times) in [
        ("put", 1),
        ("get", 2),
        ("exec", 1),
        ("list", 1),
        ("status", 2),
        ("revoke", 1),
        ("wipe_all", 1),
    ] {
        // status: the harness's own start-up check, then the session's.
        assert_eq!(
            count(action),
            times,
            "{action}: {:#?}",
            guardian.audit_records()
        );
    }
    assert_eq!(guardian.audit_of("get")[1]["outcome"], "deny");
    assert_eq!(guardian.audit_of("get")[0]["leader"], session.leader());
    let trigger = &guardian.audit_of("trigger")[0];
    assert_eq!(trigger["reason"], "revoke");
    for record in guardian.audit_records() {
        for key in [
            "seq", "time", "mono_ns", "action", "outcome", "prev", "hash",
        ] {
            assert!(!record[key].is_null(), "{key} missing from {record}");
        }
    }
    let text = fs::read_to_string(&guardian.audit).unwrap();
    assert!(!text.contains(&marker), "secret bytes in the audit log");
    let output = verify(&guardian.audit);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn edited_deleted_and_swapped_lines_are_named_by_verify() {
    let guardian = Guardian::start("audit-tamper");
    let mut session = Session::start(&guardian);
    for n in 0..4 {
        session.run(&format!("printf %s x | $NS put s{n}"));
    }
    let good = guardian.audit_text();
    let lines: Vec<&str> = good.lines().collect();
    let copy = guardian.dir.join("copy.jsonl");
    let check = |text: String, expect: &str| {
        fs::write(&copy, text).unwrap();
        let output = verify(&copy);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success() && stderr.contains(expect),
            "expected {expect:?}: {stderr}"
        );
    };
    check(good.replace("\"s2\"", "\"zz\""), "line 4");
    check(
        lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect(),
        "line 3",
    );
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    check(swapped.iter().map(|l| format!("{l}\n")).collect(), "line 2");
    check(good[..good.len() - 10].to_owned(), "torn");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_thousand_concurrent_clients_get_exactly_one_record_per_request() {
    let guardian = Guardian::start("audit-load");
    let seconds = std::env::var("NINGEN_SHIKKAKU_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let before = guardian.audit_of("status").len() as u64;
    let answered = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for _ in 0..1000 {
            scope.spawn(|| {
                while Instant::now() < deadline {
                    if status_request(&guardian.socket) {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let answered = answered.load(Ordering::Relaxed);
    assert!(answered > 1000, "only {answered} requests answered");
    let recorded = guardian.audit_of("status").len() as u64 - before;
    assert_eq!(recorded, answered, "records do not match answered requests");
    let output = verify(&guardian.audit);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{answered} requests in {seconds} s, each with a durable record");
}

/// Sends one frame of raw bytes on a fresh connection, as a hostile client
/// would, and reads whatever comes back.
fn send_raw(socket: &std::path::Path, body: &[u8]) {
    let mut stream = UnixStream::connect(socket).unwrap();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).unwrap();
    let _ = stream.read_to_end(&mut Vec::new());
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_client_cannot_forge_lines_in_tail_or_bloat_a_record() {
    let guardian = Guardian::start("audit-forge");
    let forged = "2026-11-29T00:00:00.000000Z #999999 trigger wiped [prod-db-token]";
    send_raw(
        &guardian.socket,
        format!(r#"{{"op":"get\n{forged}\u001b[2J"}}"#).as_bytes(),
    );
    send_raw(
        &guardian.socket,
        format!(r#"{{"op":"{}"}}"#, "x".repeat(60_000)).as_bytes(),
    );
    assert!(wait_until(Duration::from_secs(5), || {
        guardian.audit_of("malformed").len() == 2
    }));
    let tail = Command::new(bin())
        .args(["audit", "tail", "-n", "2", "--log"])
        .arg(&guardian.audit)
        .output()
        .unwrap();
    let text = String::from_utf8(tail.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines.iter().all(|line| line.contains(" malformed deny ")),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}') && text.contains(r"\u{a}2026"),
        "{text}"
    );
    let longest = guardian.audit_text().lines().map(str::len).max().unwrap();
    assert!(longest < 4096, "a record of {longest} bytes");
    assert!(verify(&guardian.audit).status.success());
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn only_root_reads_the_log() {
    let guardian = Guardian::start("audit-root");
    let output = guardian
        .command_as_nobody()
        .args(["audit", "tail", "--log"])
        .arg(&guardian.audit)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only root"));
    let mode = fs::metadata(&guardian.audit).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let tail = Command::new(bin())
        .args(["audit", "tail", "--kind", "status", "--log"])
        .arg(&guardian.audit)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tail.stdout).contains(" status allow"));
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_full_disk_refuses_new_secrets_but_triggers_still_fire() {
    let dir = e2e::scratch_dir("fulldisk");
    let mount = dir.join("tmpfs");
    fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success());
    let guardian = Guardian::start_with_audit("fulldisk", &mount.join("audit.jsonl"));
    let mut session = Session::start(&guardian);
    assert_eq!(session.run("printf %s x | $NS put held").0, 0);
    let holder = start_sleeping_holder(&mut session, "held");
    // Fill the file system.
    let mut filler = fs::File::create(mount.join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    while filler.write_all(&[0u8; 1]).is_ok() {}
    drop(filler);

    // The log's last page may still have room for a few records.
    let mut stored = 0;
    let refusal = loop {
        let (rc, _, err) = session.run(&format!("printf %s y | $NS put new{stored}"));
        if rc != 0 {
            break err;
        }
        stored += 1;
        assert!(stored < 64, "puts never refused on a full disk");
    };
    assert!(refusal.contains("audit log unavailable"), "{refusal}");
    let (rc, _, err) = session.run("$NS get held");
    assert!(rc != 0 && err.contains("audit log unavailable"), "{err}");
    assert_eq!(
        guardian.status()["secrets"],
        1 + stored,
        "the refused put was kept"
    );

    session.signal_leader(nix::sys::signal::Signal::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(2), || !is_alive(holder)),
        "trigger not enforced"
    );
    assert!(wait_until(
        Duration::from_secs(2),
        || guardian.status()["secrets"] == 0
    ));

    // Space comes back: no record was torn, and the first one written says
    // what is missing.
    fs::remove_file(mount.join("filler")).unwrap();
    let mut session = Session::start(&guardian);
    let (rc, _, err) = session.run("printf %s z | $NS put after");
    assert_eq!(rc, 0, "{err}");
    let output = verify(&guardian.audit);
    assert!(output.status.success(), "{output:?}");
    let gaps = guardian.audit_of("audit_gap");
    assert_eq!(gaps.len(), 1, "{:#?}", guardian.audit_records());
    let reason = gaps[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(" 2 put/get/exec requests were refused"),
        "{reason}"
    );
    // The lost trigger record is counted, the trigger itself was enforced.
    assert!(!reason.contains(" 0 other records"), "{reason}");

    // A restart on that log starts, and the chain still holds.
    drop(session);
    drop(guardian);
    let guardian = Guardian::start_with_audit("fulldisk-again", &mount.join("audit.jsonl"));
    assert_eq!(guardian.status()["secrets"], 0);
    let output = verify(&guardian.audit);
    assert!(output.status.success(), "{output:?}");
    drop(guardian);
    let _ = Command::new("umount").arg(&mount).status();
    let _ = fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_chain_continues_across_rotated_files_under_the_real_guardian_and_tail_follows_it() {
    let guardian = Guardian::start_with_config("audit-rotate", "audit_max_bytes = 4096\n");
    let before = guardian.audit_records().len();
    let mut follower = Command::new(bin())
        .args(["audit", "tail", "--follow", "--json", "--log"])
        .arg(&guardian.audit)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = lines_of(follower.stdout.take().unwrap());
    // As fast as they come: several rotations between two looks of `tail -f`.
    for _ in 0..60 {
        assert!(status_request(&guardian.socket));
    }
    assert_eq!(guardian.audit_records().len(), before + 60);
    assert!(
        fs::metadata(format!("{}.3", guardian.audit.display())).is_ok(),
        "no rotation"
    );
    let output = verify(&guardian.audit);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("file(s)"),
        "{stdout}"
    );
    let every_seq: Vec<u64> = (1..=before as u64 + 60).collect();
    let seqs = || -> Vec<u64> {
        let lines = followed.lock().unwrap();
        lines
            .iter()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let all_shown = wait_until(Duration::from_secs(3), || seqs().len() >= every_seq.len());
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(all_shown, "tail -f showed {:?}", seqs());
    assert_eq!(seqs(), every_seq, "each record once, in order");
}

/// Every line `stdout` prints, collected by a thread as they come.
fn lines_of(stdout: std::process::ChildStdout) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    lines
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_guardian_killed_with_zeroed_room_in_its_log_restarts_on_it_and_goes_on_from_its_last_record() {
    let dir = e2e::scratch_dir("audit-crash");
    let log = dir.join("audit/audit.jsonl");
    let mut guardian = Guardian::start_with_audit("audit-crash-guardian", &log);
    for _ in 0..20 {
        assert!(status_request(&guardian.socket));
    }
    let answered = guardian.audit_records();
    // The live file has zeroed room after its records, and a crash keeps it.
    assert!(fs::metadata(&log).unwrap().len() > guardian.audit_len());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guardian.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !guardian.is_running()));
    assert!(
        fs::read(&log).unwrap().ends_with(&[0]),
        "no room left by the kill"
    );
    let output = verify(&log);
    assert!(output.status.success(), "{output:?}");
    drop(guardian);

    let guardian = Guardian::start_with_audit("audit-crash-again", &log);
    assert!(status_request(&guardian.socket));
    let records = guardian.audit_records();
    assert_eq!(
        records[..answered.len()],
        answered[..],
        "every answered record kept"
    );
    assert!(
        guardian.audit_of("audit_torn_tail").is_empty(),
        "{records:#?}"
    );
    assert_eq!(
        records[answered.len()]["seq"].as_u64(),
        Some(answered.len() as u64 + 1),
        "the chain goes on from the last record: {records:#?}"
    );
    let output = verify(&log);
    assert!(output.status.success(), "{output:?}");
    let shown = Command::new(bin())
        .args(["audit", "tail", "--json", "--log"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).lines().count(),
        records.len()
    );
    drop(guardian);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_flood_of_huge_malformed_messages_from_another_uid_leaves_the_log_small() {
    let guardian = Guardian::start("audit-flood");
    let before = guardian.audit_len();
    // As nobody: 60 KB of garbage op on a fresh connection, for 3 s.
    let flood = r#"
import socket, struct, sys, time
body = b'{"op":"' + b'x' * 60000 + b'"}'
frame = struct.pack('<I', len(body)) + body
sent, end = 0, time.time() + 3
while time.time() < end:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1]); s.sendall(frame); s.recv(4096); sent += 1
    except OSError:
        pass
    s.close()
print(sent)
"#;
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", flood])
        .arg(&guardian.socket)
        .output()
        .unwrap();
    let sent: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(sent >= 300, "only {sent} messages sent");
    // The last second's summary comes a second after it.
    assert!(wait_until(Duration::from_secs(3), || {
        guardian
            .audit_of("malformed")
            .iter()
            .filter_map(|r| r["reason"].as_str())
            .any(|reason| reason.contains("more malformed messages from uid 65534"))
    }));
    std::thread::sleep(Duration::from_millis(1200));
    let records = guardian.audit_of("malformed");
    let one_by_one = records.iter().filter(|r| r["peer"]["uid"] == 65534).count() as u64;
    let summed: u64 = records
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .filter(|reason| reason.contains("more malformed messages from uid 65534"))
        .filter_map(|reason| reason.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(one_by_one + summed, sent, "every message accounted for");
    let growth = guardian.audit_len() - before;
    eprintln!("{sent} malformed messages of 60 KB: the log grew by {growth} bytes");
    assert!(growth < 256 << 10, "the log grew by {growth} bytes");
    assert!(verify(&guardian.audit).status.success());
    assert!(status_request(&guardian.socket));
}
