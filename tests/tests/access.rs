//! Who may do what: secrets are usable only by their owner, from inside the
//! bound session; binding is refused for PID 1, dead PIDs and other users.

use std::process::Command;

use e2e::{Guardian, Session, output_with_input, stderr};

/// The pid of a kernel thread, from the `Kthread` field of /proc/PID/status.
fn kernel_thread() -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status.contains("\nKthread:\t1\n").then_some(pid)
        })
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn only_the_owner_inside_the_session_can_get() {
    let guardian = Guardian::start("access");
    let mut session = Session::start(&guardian);
    let (rc, _, err) = session.run("printf %s hunter2 | $NS put tok");
    assert_eq!(rc, 0, "{err}");

    // Inside the session, as the owner: allowed, bytes exact.
    let (rc, out, _) = session.run("$NS get tok");
    assert_eq!((rc, out.as_slice()), (0, &b"hunter2"[..]));

    // Same uid, another session, not a descendant of the leader.
    let outside = guardian.cli(["get", "tok"]);
    assert!(!outside.status.success());
    assert!(stderr(&outside).contains("outside"), "{}", stderr(&outside));
    assert!(outside.stdout.is_empty());

    // Another uid, outside and inside the session: the name does not exist for it.
    let other = guardian
        .command_as_nobody()
        .args(["get", "tok"])
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(
        stderr(&other).contains("no such secret"),
        "{}",
        stderr(&other)
    );
    let setpriv = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    let (rc, out, err) = session.run(&format!("{setpriv} $NS get tok"));
    assert_ne!(rc, 0);
    assert!(out.is_empty() && err.contains("no such secret"), "{err}");
    let (rc, _, err) = session.run(&format!("{setpriv} $NS revoke tok"));
    assert!(rc != 0 && err.contains("no such secret"), "{err}");

    // Every attempt is in the audit log, allowed and denied.
    let gets = guardian.audit_of("get");
    let outcomes: Vec<_> = gets
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["allow", "deny", "deny", "deny"]);
    assert_eq!(gets[2]["peer"]["uid"], 65534);
    let text = std::fs::read_to_string(&guardian.audit).unwrap();
    assert!(!text.contains("hunter2"), "secret bytes in the audit log");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn binding_is_refused_for_pid_1_dead_pids_and_other_users() {
    let guardian = Guardian::start("bind");
    // Each put has a secret on stdin, so a refusal comes from the guardian's
    // checks and not from the client's "the secret is empty".
    let put = |args: &[&str]| output_with_input(guardian.command().arg("put").args(args), b"x");
    let init = put(&["n1", "--bind", "1"]);
    assert!(
        !init.status.success() && stderr(&init).contains("PID 1"),
        "{}",
        stderr(&init)
    );

    let kthread = kernel_thread().expect("a kernel thread in /proc");
    let kernel = put(&["n0", "--bind", &kthread]);
    assert!(
        !kernel.status.success() && stderr(&kernel).contains("kernel thread"),
        "{}",
        stderr(&kernel)
    );

    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id().to_string();
    dead.wait().unwrap();
    let gone = put(&["n2", "--bind", &dead_pid]);
    assert!(
        !gone.status.success() && stderr(&gone).contains("no such process"),
        "{}",
        stderr(&gone)
    );

    // nobody may not bind to a root process; root may bind to anyone's.
    let root_pid = std::process::id().to_string();
    let mut as_nobody = guardian.command_as_nobody();
    let other = output_with_input(as_nobody.args(["put", "n3", "--bind", &root_pid]), b"x");
    assert!(
        !other.status.success()
            && stderr(&other).contains(&format!("PID {root_pid} belongs to another user")),
        "{}",
        stderr(&other)
    );
    let mut sleeper = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    let by_root = put(&["n4", "--bind", &sleeper.id().to_string()]);
    assert!(by_root.status.success(), "{}", stderr(&by_root));
    let bad_name = guardian.cli(["get", "../etc/passwd"]);
    assert!(!bad_name.status.success() && stderr(&bad_name).contains("invalid secret name"));
    assert_eq!(guardian.status()["secrets"], 1, "only n4 is stored");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
