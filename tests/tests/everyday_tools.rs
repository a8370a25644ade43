//! Issue 24: everyday tools keep working while secrets are held. Debian 12's
//! `ps` reads every process's environment; an environment that holds no
//! value leaks nothing, so reading it is no attack, from anywhere. Only an
//! `exec --env` holder's environment holds one: a process outside the
//! session that reads it is stopped before the first byte and recorded, and
//! by default nothing is wiped (`on_environ_read`). Inside the session none
//! of this is an attack.

use std::{
    os::unix::process::ExitStatusExt,
    process::Command,
    sync::{Mutex, PoisonError},
    thread,
    time::Duration,
};

use e2e::{Guardian, Session, Stop, is_alive, put_marker, start_sleeping_holder, wait_until};

/// A `ps` of one test reads every process on the machine, the other
/// test's holders too: they run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long the guardian may take to read a new holder's environment (it
/// is guarded until then).
const ENVIRON_READ: Duration = Duration::from_millis(1000);

/// The tools, as `sh -c` lines; `{leader}` is the session leader's pid.
const TOOLS: [&str; 9] = [
    "ps -ef",
    "ps aux",
    "ps -p {leader}",
    "pgrep -a sleep",
    "top -bn1",
    "pstree -p {leader}",
    "lsof -p {leader}",
    "strace true 2>&1",
    "ps -o pid,args --ppid {leader}",
];

/// A session of `nobody` holding "tok", with an `exec --file` holder.
fn file_session(guardian: &Guardian) -> (Session, Vec<u8>, i32) {
    let mut session = Session::start_as_nobody(guardian);
    let marker = put_marker(&mut session, "tok");
    let holder = started_sleep(&mut session, "$NS exec --file T=tok -- sleep 1000");
    (session, marker, holder)
}

/// Runs `command` (ending in `sleep 1000`) in the background of `session`:
/// its pid, once it runs `sleep` and the guardian has read its environment.
fn started_sleep(session: &mut Session, command: &str) -> i32 {
    let (rc, out, err) = session.run(&format!("{command} > /dev/null 2>&1 & echo $!"));
    assert_eq!(rc, 0, "{err}");
    let pid: i32 = String::from_utf8_lossy(&out).trim().parse().unwrap();
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(10), || comm().trim() == "sleep"));
    thread::sleep(ENVIRON_READ);
    pid
}

/// Runs `line` as root, or as `nobody`, outside the session: its status.
fn outside(line: &str, as_nobody: bool) -> std::process::Output {
    let mut command = match as_nobody {
        true => {
            let mut command = Command::new("setpriv");
            command.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
            ]);
            command
        }
        false => {
            let mut command = Command::new("sh");
            command.arg("-c");
            command
        }
    };
    command
        .arg(format!("exec {line}"))
        .output()
        .expect("run the tool")
}

/// The secret is still there, and nothing was recorded as an attempt.
fn untouched(guardian: &Guardian, session: &mut Session, marker: &[u8], what: &str) {
    let (rc, out, err) = session.run("$NS get tok");
    assert_eq!(
        (rc, out.as_slice()),
        (0, marker),
        "{what} wiped the session: {err}"
    );
    let tamper = guardian.audit_of("tamper");
    assert!(
        tamper.is_empty(),
        "{what} was taken for an attack: {tamper:?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn issue_24_everyday_tools_work_from_anywhere_beside_a_file_holder() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let guardian = Guardian::start("everyday-file");
    let (mut session, marker, holder) = file_session(&guardian);
    let leader = session.leader().to_string();
    for tool in TOOLS {
        let line = tool.replace("{leader}", &leader);
        for as_nobody in [false, true] {
            let output = outside(&line, as_nobody);
            let who = if as_nobody { "the owner" } else { "root" };
            assert!(output.status.success(), "{who}'s `{line}`: {output:?}");
            assert!(
                !output.stdout.is_empty(),
                "{who}'s `{line}` printed nothing"
            );
        }
        let (rc, out, err) = session.run(&line);
        assert_eq!(rc, 0, "`{line}` inside the session: {err}");
        assert!(
            !out.is_empty(),
            "`{line}` inside the session printed nothing"
        );
        untouched(&guardian, &mut session, &marker, &line);
    }
    assert!(is_alive(holder));
    let root_ps = outside("ps -ef", false);
    let listing = String::from_utf8_lossy(&root_ps.stdout);
    assert!(listing.contains("sleep 1000"), "{listing}");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn issue_24_ps_at_an_env_holder_is_stopped_outside_the_session_and_works_inside() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let guardian = Guardian::start("everyday-env");
    let mut session = Session::start_as_nobody(&guardian);
    let marker = put_marker(&mut session, "tok");
    let holder = start_sleeping_holder(&mut session, "tok");
    thread::sleep(ENVIRON_READ);

    // Inside the session, and from a second exec of the same secret.
    let (rc, _, err) = session.run("ps -ef");
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = session.run("$NS exec --env T=tok -- ps -ef");
    assert_eq!(rc, 0, "{err}");
    untouched(&guardian, &mut session, &marker, "ps inside the session");

    // Outside, every ps reads the holder's environment, which holds the
    // value: stopped before the first byte, recorded, nothing wiped. Where
    // BPF LSM runs, ps is refused that one file and prints the rest.
    let stop = Stop::armed_by(&guardian);
    for as_nobody in [false, true] {
        let output = outside("ps -ef", as_nobody);
        match stop {
            Stop::Killed => assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{output:?}"),
            Stop::Denied => {
                let listed = String::from_utf8_lossy(&output.stdout);
                assert!(output.status.success(), "{output:?}");
                assert!(listed.contains(&format!(" {holder} ")), "{listed}");
            }
        }
    }
    // The tools that read no environment work from outside as beside a
    // `--file` holder.
    let leader = session.leader().to_string();
    for tool in TOOLS.iter().filter(|tool| !tool.starts_with("ps ")) {
        let line = tool.replace("{leader}", &leader);
        for as_nobody in [false, true] {
            let output = outside(&line, as_nobody);
            assert!(output.status.success(), "`{line}`: {output:?}");
        }
    }
    // The value itself, asked for by an outsider: an error and no byte.
    let cat = outside(&format!("cat /proc/{holder}/environ"), true);
    assert!(!cat.status.success() && cat.stdout.is_empty(), "{cat:?}");
    let recorded = wait_until(Duration::from_secs(5), || {
        guardian.audit_of("tamper").len() >= 3
    });
    assert!(recorded, "{:?}", guardian.audit_records());
    for record in guardian.audit_of("tamper") {
        let reason = record["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("open of environ (request 4) on holder {holder}"))
                || reason.contains(&format!("on holder {holder}")),
            "{reason}"
        );
        assert!(reason.contains("no secret wiped"), "{reason}");
    }
    assert!(is_alive(holder), "the holder was killed");
    let (rc, out, _) = session.run("$NS get tok");
    assert_eq!((rc, out), (0, marker), "the session was wiped");
}

/// After a guardian restart (an upgrade, `systemctl restart`) every login
/// shell is older than the guardian: root's `ps -p 1` and `ps -ef` meet
/// session members before the guardian, and still touch nothing.
#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn issue_24_ps_after_a_guardian_restart_touches_no_session() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let mut first = Guardian::start("everyday-before-restart");
    let mut session = Session::start_as_nobody(&first);
    first.stop();
    let guardian = Guardian::start("everyday-restarted");
    assert!(guardian.pid() > session.leader());
    let (rc, _, err) = session.run(&format!(
        "export NINGEN_SHIKKAKU_SOCKET={}",
        guardian.socket.display()
    ));
    assert_eq!(rc, 0, "{err}");
    let marker = put_marker(&mut session, "tok");
    let (rc, _, err) =
        session.run("$NS exec --file T=tok -- sleep 1000 > /dev/null 2>&1 & echo started");
    assert_eq!(rc, 0, "{err}");
    thread::sleep(ENVIRON_READ);
    for line in ["ps -p 1", "ps -ef", "ps aux"] {
        for as_nobody in [false, true] {
            let output = outside(line, as_nobody);
            assert!(output.status.success(), "`{line}`: {output:?}");
        }
        untouched(&guardian, &mut session, &marker, line);
    }
}

/// `echo "$TOKEN" | put` stores a trailing newline that `$(get)` drops: the
/// value exported that way is still the value, and a child carrying it is
/// guarded from an outsider like an `exec --env` holder.
#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_value_put_with_a_newline_and_exported_by_get_is_guarded() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let guardian = Guardian::start("everyday-newline");
    let mut session = Session::start_as_nobody(&guardian);
    let (rc, _, err) = session.run("printf 'n3wline-s3cret\\n' | $NS put tok");
    assert_eq!(rc, 0, "{err}");
    let child = started_sleep(&mut session, "export T=$($NS get tok); sleep 1000");

    let cat = outside(&format!("cat /proc/{child}/environ"), true);
    let read = String::from_utf8_lossy(&cat.stdout);
    assert!(
        !read.contains("n3wline-s3cret"),
        "the outsider read it: {read}"
    );
    assert!(!cat.status.success(), "{cat:?}");
    let recorded = wait_until(Duration::from_secs(5), || {
        !guardian.audit_of("tamper").is_empty()
    });
    assert!(recorded, "{:?}", guardian.audit_records());
}

/// A shell that exported `T=$(get tok)` hands the value to what it starts
/// after the value was revoked too: those environments stay guarded until
/// the leader exits, though the guardian holds the value no more.
#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_value_exported_before_a_revoke_stays_guarded_in_what_the_shell_starts_next() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let guardian = Guardian::start("everyday-after-revoke");
    let mut session = Session::start_as_nobody(&guardian);
    let marker = put_marker(&mut session, "tok");
    let (rc, _, err) = session.run("export T=$($NS get tok)");
    assert_eq!(rc, 0, "{err}");
    let mut panic_button = Session::start_as_nobody(&guardian);
    let (rc, _, err) = panic_button.run("$NS revoke tok");
    assert_eq!(rc, 0, "{err}");
    let child = started_sleep(&mut session, "sleep 1000");

    let cat = outside(&format!("cat /proc/{child}/environ"), true);
    assert!(
        !cat.stdout.windows(marker.len()).any(|w| w == marker),
        "the outsider read the revoked value"
    );
    assert!(!cat.status.success(), "{cat:?}");
}
