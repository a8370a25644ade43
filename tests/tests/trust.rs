//! Trust at the edges (issue 16): a connection belongs to the process that
//! made it, for as long as that process runs the program that made it.
//! Attackers are the same uid outside the session and another uid.

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use e2e::{Guardian, Session, abuser_in, put_marker, read_attack, scratch_dir, wait_until};

/// The socket descriptors `pid` holds, from /proc/PID/fd.
fn sockets_of(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| {
                    fs::read_link(entry.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_dumpable_client_is_refused_and_a_non_dumpable_one_served() {
    let guardian = Guardian::start("dumpable-client");
    let mut session = Session::start_as_nobody(&guardian);
    let marker = put_marker(&mut session, "tok");
    let get = r#"'{"op":"get","name":"tok"}'"#;
    let served = abuser_in(&mut session, &format!("request {get}"));
    assert_eq!(served["reply"], "secrets", "{served}");
    assert_eq!(
        served["secret_bytes"][0].as_str().unwrap().as_bytes(),
        marker
    );
    let (_, out, err) = session.run(&format!(
        "ABUSER_DUMPABLE=1 /usr/bin/python3 {} request \"$NINGEN_SHIKKAKU_SOCKET\" {get}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/helpers/abuser.py")
    ));
    let refused: serde_json::Value =
        serde_json::from_slice(&out).unwrap_or_else(|_| panic!("{err}"));
    assert_eq!(refused["reply"], "error", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("dumpable"),
        "{refused}"
    );
    let audited = guardian.audit_of("malformed");
    assert!(
        audited
            .iter()
            .any(|r| r["reason"].as_str().unwrap().contains("dumpable")),
        "the refusal is audited: {audited:?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_connection_kept_after_its_process_execs_is_refused() {
    let guardian = Guardian::start("after-exec");
    let mut session = Session::start_as_nobody(&guardian);
    put_marker(&mut session, "tok");
    // As a thief holding an `exec` client's socket after the client became
    // its command: the process that connected is now `sleep`.
    let reply = abuser_in(&mut session, r#"after-exec '{"op":"get","name":"tok"}'"#);
    assert_eq!(reply["reply"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("dumpable"),
        "{reply}"
    );
    assert_eq!(guardian.status()["secrets"], 1, "nothing else changed");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_waiting_client_s_socket_cannot_be_taken_by_its_own_uid() {
    // A root listener that takes requests and never answers holds a real
    // client mid-call, its socket open, as long as the test needs.
    let dir = scratch_dir("stolen");
    let everyone = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    fs::set_permissions(&dir, everyone).expect("open the dir to nobody");
    let path = dir.join("mute.sock");
    let mut mute = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys,time\n\
             import os;s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);os.chmod(sys.argv[1],0o666);s.listen()\n\
             c=s.accept()[0];print('up',flush=True);time.sleep(30)",
        ])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start mute listener");
    assert!(wait_until(Duration::from_secs(5), || path.exists()));
    let mut client = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(e2e::bin())
        .args(["status", "--socket"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .expect("start client");
    let mut socket = None;
    assert!(wait_until(Duration::from_secs(5), || {
        socket = sockets_of(client.id()).pop();
        socket.is_some()
    }));
    let fd = socket.unwrap();
    let out = dir.join("stolen.bin");
    let attempt = read_attack("pidfd-getfd", client.id() as i32, &out, &[&fd], true);
    let said = String::from_utf8_lossy(&attempt.stdout);
    assert!(
        said.contains("got -1"),
        "pidfd_getfd was not refused (EPERM): {said} {}",
        e2e::stderr(&attempt)
    );
    let _ = client.kill();
    let _ = client.wait();
    let _ = mute.kill();
    let _ = mute.wait();
}

/// The cgroup v2 directory of `pid`, from /proc/PID/cgroup.
fn cgroup_of(pid: i32) -> std::path::PathBuf {
    let mount = e2e::cgroup2_mount().expect("a cgroup v2 mount");
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap();
    mount.join(path.trim_start_matches('/'))
}

/// Runs `sh -c script` as uid 12345 and returns its exit code and output.
fn as_stranger(script: &str) -> (i32, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=12345",
            "--regid=12345",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &e2e::stderr(&out);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn another_uid_learns_nothing_of_a_user_s_secrets_or_holders() {
    let guardian = Guardian::start("privacy");
    let mut session = Session::start_as_nobody(&guardian);
    put_marker(&mut session, "tok");
    let holder = e2e::start_sleeping_holder(&mut session, "tok");
    let socket = guardian.socket.display();
    let (rc, status) = as_stranger(&format!(
        "{} status --json --socket {socket}",
        e2e::bin().display()
    ));
    assert_eq!(rc, 0, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        (&status["secrets"], &status["leaders"], &status["holders"]),
        (&0.into(), &0.into(), &0.into()),
        "{status}"
    );
    let grant = cgroup_of(holder);
    let procs = grant.join("cgroup.procs");
    assert!(
        fs::read_to_string(&procs)
            .unwrap()
            .contains(&holder.to_string())
    );
    let (rc, said) = as_stranger(&format!("cat {}", procs.display()));
    assert_ne!(rc, 0, "another uid read the holders' pids: {said}");
    let instance = grant.parent().unwrap();
    let (rc, said) = as_stranger(&format!("ls {}", instance.display()));
    assert_ne!(rc, 0, "another uid listed the grants: {said}");
    assert_eq!(guardian.status()["holders"], 1, "root sees them all");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn grant_cgroups_go_once_their_holders_exit() {
    let guardian = Guardian::start("cgroup-cleanup");
    let mut session = Session::start_as_nobody(&guardian);
    put_marker(&mut session, "tok");
    let holder = e2e::start_sleeping_holder(&mut session, "tok");
    let instance = cgroup_of(holder).parent().unwrap().to_owned();
    let (rc, _, err) = session.run(
        "for i in $(seq 100); do $NS exec --env T=tok -- true; done; \
         for i in $(seq 30); do $NS exec --env T=tok -- true & p=\"$p $!\"; done; wait $p",
    );
    assert_eq!(rc, 0, "{err}");
    let grants = || {
        fs::read_dir(&instance)
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("grant-"))
            .count()
    };
    let settled = wait_until(Duration::from_secs(5), || grants() == 1);
    assert!(settled, "{} grant cgroups left for 1 live holder", grants());
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_same_uid_outsider_cannot_plant_a_value_in_another_session() {
    let guardian = Guardian::start("plant");
    let mut victim = Session::start_as_nobody(&guardian);
    let mut outsider = Session::start_as_nobody(&guardian);
    let (rc, _, err) = outsider.run(&format!(
        "printf planted | $NS put tok --bind {}",
        victim.leader()
    ));
    assert_ne!(rc, 0, "planted a secret in another session");
    assert!(err.contains("session you are not in"), "{err}");
    // Nor to an ancestor that every terminal shares (a tmux server, a
    // `systemd --user`), whose secrets each terminal's `exec` could use.
    let server = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-c",
        ])
        .arg("setsid bash -c \"printf planted | $NS put tok --bind \\$PPID\"; exit $?")
        .env("NS", e2e::bin())
        .env("NINGEN_SHIKKAKU_SOCKET", &guardian.socket)
        .output()
        .unwrap();
    assert!(!server.status.success(), "planted at the shared ancestor");
    assert!(
        e2e::stderr(&server).contains("session you are not in"),
        "{}",
        e2e::stderr(&server)
    );
    let marker = put_marker(&mut victim, "tok");
    let (rc, out, err) = victim.run("$NS exec --env T=tok -- printenv T");
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim_ascii(), marker, "the victim's own value");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn bind_is_read_in_the_caller_s_pid_namespace() {
    let guardian = Guardian::start("pidns-bind");
    let mut session = Session::start(&guardian);
    // Inside the new namespace the shell is PID 1; outside it is another.
    let (rc, _, err) =
        session.run("unshare --pid --fork --mount-proc sh -c 'printf x | $NS put tok --bind $$'");
    assert_eq!(rc, 0, "{err}");
    let bound: i32 = err
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in: {err}"));
    assert_ne!(bound, 1, "read as the initial namespace's PID 1");
    let audited = guardian.audit_of("put");
    assert_eq!(audited.last().unwrap()["leader"], bound, "{audited:?}");
}

/// Runs `put tok` on a new terminal, waits for its prompt, types `keys`,
/// and prints whether echo was off at the prompt, whether it is on after the
/// client ended, and the client's exit code.
const PROMPT_ON_A_TERMINAL: &str = r#"
import os, pty, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "put", "tok"])
seen = b""
while b"secret for" not in seen:
    seen += os.read(fd, 100)
time.sleep(0.3)
echo_at_prompt = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
os.write(fd, sys.argv[2].encode())
_, status = os.waitpid(pid, 0)
echo_after = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
print(echo_at_prompt, echo_after, os.waitstatus_to_exitcode(status))
"#;

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn ctrl_c_at_the_prompt_gives_the_terminal_its_echo_back() {
    let guardian = Guardian::start("prompt");
    // The client leads the terminal's session, so the guardian refuses to
    // bind the secret to it (5) once it is typed; its exit code tells what
    // happened.
    for (keys, code) in [("\x03", "130"), ("\x1c", "131"), ("typed\n", "5")] {
        let out = Command::new("/usr/bin/python3")
            .args(["-c", PROMPT_ON_A_TERMINAL])
            .arg(e2e::bin())
            .arg(keys)
            .env("NINGEN_SHIKKAKU_SOCKET", &guardian.socket)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = said.split_whitespace().collect();
        let expected = ["False", "True", code];
        assert_eq!(fields, expected, "{keys:?}: {said} {}", e2e::stderr(&out));
    }
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_holder_that_becomes_another_user_is_killed_and_its_secret_wiped() {
    let guardian = Guardian::start("setuid-holder");
    // A setuid program of another user, as `su otheruser` would be.
    let mut session = Session::start_as_nobody(&guardian);
    let other_id = session.dir().join("id-as-12345");
    fs::copy("/usr/bin/id", &other_id).unwrap();
    nix::unistd::chown(&other_id, Some(12345.into()), None).unwrap();
    let setuid = std::os::unix::fs::PermissionsExt::from_mode(0o4755);
    fs::set_permissions(&other_id, setuid).unwrap();
    put_marker(&mut session, "tok");
    let (rc, out, _) = session.run(&format!("$NS exec --env T=tok -- {}", other_id.display()));
    assert_eq!(rc, 128 + 9, "not killed: {}", String::from_utf8_lossy(&out));
    assert!(
        out.is_empty(),
        "it ran as uid 12345: {}",
        String::from_utf8_lossy(&out)
    );
    let (rc, _, _) = session.run("$NS get tok");
    assert_ne!(rc, 0, "the secret survived its holder leaving the grant");
    let records = guardian.audit_of("tamper");
    assert!(
        records.iter().any(|r| r["reason"]
            .as_str()
            .unwrap()
            .starts_with("credential change")),
        "{records:?}"
    );

    // Root's holder dropping to another uid with setresuid.
    let mut root = Session::start(&guardian);
    put_marker(&mut root, "tok");
    let (rc, out, _) = root.run(
        "$NS exec --env T=tok -- setpriv --reuid=65534 --regid=65534 --clear-groups printenv T",
    );
    assert_eq!(rc, 128 + 9, "not killed: {}", String::from_utf8_lossy(&out));
    assert!(out.is_empty(), "the other uid got the secret");
}
