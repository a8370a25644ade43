//! No escape for holders: a tree of 200 descendants (double-forked setsid
//! daemons, process-group changers) is gone after the trigger; and if the
//! guardian itself is killed, every holder of every session dies with it.

use std::{
    fs,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    process::{Child, Command, Stdio},
    time::Duration,
};

use e2e::{Guardian, Session, escaping_holder, is_alive, send_signal, wait_until};
use nix::sys::signal::Signal;

/// Live processes whose argv[0] is `tag`.
fn tagged(tag: &str) -> Vec<i32> {
    e2e::processes()
        .filter(|(pid, cmdline)| {
            cmdline.split(|&b| b == 0).next() == Some(tag.as_bytes()) && is_alive(*pid)
        })
        .map(|(pid, _)| pid)
        .collect()
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_tree_of_200_escaping_descendants_is_gone_after_the_trigger() {
    let guardian = Guardian::start("tree");
    assert_eq!(
        guardian.status()["containment"],
        "cgroup",
        "cgroup v2 expected on this machine"
    );
    let mut session = Session::start(&guardian);
    let (rc, _, err) = session.run("printf %s x | $NS put tok");
    assert_eq!(rc, 0, "{err}");
    let tag = format!("ns-tree-{}", std::process::id());
    // 50 rounds of 4 escape styles: a plain child, a double-forked setsid
    // daemon, a double fork without setsid, and a process-group changer.
    let script = format!(
        r#"for i in $(seq 50); do
             (exec -a {tag} sleep 1000) &
             ( setsid bash -c 'exec -a {tag} sleep 1000' & ) &
             ( ( exec -a {tag} sleep 1000 ) & ) &
             python3 -c 'import os; os.setpgid(0, 0); os.execvp("sleep", ["{tag}", "1000"])' &
           done; exec -a {tag}-root sleep 1000"#
    );
    fs::write(session.dir().join("tree.sh"), script).unwrap();
    session.spawn("$NS exec --env T=tok -- bash tree.sh");
    let grown = wait_until(Duration::from_secs(30), || tagged(&tag).len() == 200);
    assert!(
        grown,
        "only {} of 200 descendants started",
        tagged(&tag).len()
    );

    session.signal_leader(Signal::SIGKILL);
    let gone = wait_until(Duration::from_secs(2), || tagged(&tag).is_empty());
    assert!(gone, "{} descendants survived", tagged(&tag).len());
    assert!(tagged(&format!("{tag}-root")).is_empty());
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn killing_the_guardian_kills_every_holder_and_a_restart_starts_empty() {
    let guardian = Guardian::start("guardian-death");
    assert_eq!(guardian.status()["fail_closed"], "supervisor");
    let mut sessions: Vec<Session> = (0..3).map(|_| Session::start(&guardian)).collect();
    let mut holders = Vec::new();
    for (n, session) in sessions.iter_mut().enumerate() {
        let (rc, _, err) = session.run(&format!("printf %s x | $NS put tok{n}"));
        assert_eq!(rc, 0, "{err}");
        let holder = escaping_holder("pids", "T");
        session.spawn(&format!("$NS exec --env T=tok{n} -- {holder}"));
        assert!(wait_until(Duration::from_secs(10), || session
            .pids_in("pids")
            .len()
            == 3));
        holders.extend(session.pids_in("pids"));
    }
    send_signal(guardian.pid(), Signal::SIGKILL);
    let dead = wait_until(Duration::from_secs(1), || {
        holders.iter().all(|&pid| !is_alive(pid))
    });
    let alive: Vec<_> = holders.iter().filter(|&&pid| is_alive(pid)).collect();
    assert!(dead, "holders outlived the guardian: {alive:?}");

    let restarted = Guardian::start("guardian-restart");
    assert_eq!(restarted.status()["secrets"], 0);
    drop(guardian);
}

/// A holder that, once `go` exists, forks and reaps `n` children that exit at
/// once (a fork event and an exit event each), writes `done`, then sleeps.
const FORKER: &str = r#"
import os, sys, time
go, done, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
while not os.path.exists(go):
    time.sleep(0.01)
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
open(done, "w").close()
time.sleep(1000)
"#;

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn lost_holder_events_cost_no_one_a_secret_and_the_books_are_set_right() {
    let guardian = Guardian::start("lost-events");
    let mut quiet = Session::start(&guardian);
    assert_eq!(quiet.run("printf x | $NS put calm").0, 0);
    let bystander = e2e::start_sleeping_holder(&mut quiet, "calm");
    let mut busy = Session::start(&guardian);
    assert_eq!(busy.run("printf x | $NS put noisy").0, 0);
    fs::write(busy.dir().join("forker.py"), FORKER).unwrap();
    let (go, done) = (busy.dir().join("go"), busy.dir().join("done"));
    // 12,000 forks make 24,000 events; the 1 MiB ring holds about 14,500.
    busy.spawn(&format!(
        "$NS exec --env T=noisy -- /usr/bin/python3 forker.py {} {} 12000",
        go.display(),
        done.display()
    ));
    // The client's own command line names forker.py too: wait for python,
    // which runs only once the guardian has answered the exec.
    let forker = || {
        e2e::processes()
            .find(|(_, cmdline)| cmdline.windows(9).any(|w| w == b"forker.py"))
            .map(|(pid, _)| pid)
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim().starts_with("python"))
            })
    };
    assert!(wait_until(Duration::from_secs(10), || forker().is_some()));
    let forker = forker().unwrap();

    // Nothing drains the ring while the guardian is stopped. The supervisor
    // un-stops a stopped guardian, so it is stopped first.
    let supervisor = e2e::supervisor_of(guardian.pid());
    for pid in [supervisor, guardian.pid()] {
        send_signal(pid, Signal::SIGSTOP);
        assert!(wait_until(Duration::from_secs(2), || e2e::is_stopped(pid)));
    }
    fs::write(&go, "").unwrap();
    let overflowed = wait_until(Duration::from_secs(60), || done.exists());
    for pid in [guardian.pid(), supervisor] {
        send_signal(pid, Signal::SIGCONT);
    }
    assert!(overflowed, "the forker did not finish");

    // The holder ring overflowed, and only it: the guardian reads its
    // holders off the kernel's map, and no one loses a secret.
    let status = || guardian.status();
    assert!(
        wait_until(Duration::from_secs(5), || status()["holder_events_lost"]
            .as_u64()
            .is_some_and(|lost| lost > 0)),
        "{}",
        status()
    );
    assert_eq!(status()["dropped_events"], 0, "{}", status());
    assert_eq!(status()["secrets"], 2, "{}", status());
    assert!(is_alive(bystander) && is_alive(forker));
    // The bystander and the forker; the forker's 12,000 children are gone.
    assert!(
        wait_until(Duration::from_secs(5), || status()["holders"] == 2),
        "{}",
        status()
    );
    assert_eq!(busy.run("$NS revoke noisy").0, 0);
    assert!(wait_until(Duration::from_secs(5), || !is_alive(forker)));
    assert!(is_alive(bystander), "the other session's holder lives on");
    assert_eq!(status()["secrets"], 1);
}

/// Runs `supervise` by hand over a cgroup of its own that holds one sleeping
/// process, with `fd3(&sleeper)` (or nothing) at descriptor 3, where the
/// guardian puts its pidfd. Checks that the supervisor refused at once,
/// leaving the sleeper and the cgroup alone, and returns its stderr.
fn supervise_with(tag: &str, fd3: impl FnOnce(&Child) -> Option<OwnedFd>) -> String {
    let mount = e2e::cgroup2_mount().expect("a cgroup v2 mount");
    let cgroup = mount.join(format!("ns-e2e-{}-{tag}", std::process::id()));
    fs::create_dir(&cgroup).unwrap();
    let mut sleeper = Command::new("sleep")
        .arg("1000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    fs::write(cgroup.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    // At 10 or above, so never already at 3, where dup2 would do nothing.
    let fd3 = fd3(&sleeper).map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 10).unwrap());
    let raw = fd3.as_ref().map(AsRawFd::as_raw_fd);
    let mut command = Command::new(e2e::bin());
    command
        .args(["supervise", "--cgroup"])
        .arg(&cgroup)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the child only calls dup2 or close, which
    // are async-signal-safe, on descriptors it inherited.
    unsafe {
        command.pre_exec(move || {
            match raw {
                Some(fd) if libc::dup2(fd, 3) < 0 => return Err(std::io::Error::last_os_error()),
                Some(_) => {}
                None => _ = libc::close(3),
            }
            Ok(())
        });
    }
    let mut supervisor = command.spawn().unwrap();
    drop(fd3);
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(supervisor.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = supervisor.kill();
    }
    let output = supervisor.wait_with_output().unwrap();
    let stderr = e2e::stderr(&output);
    let untouched = is_alive(sleeper.id() as i32) && cgroup.exists();
    // Clean up before any assertion, so a failure leaves nothing behind.
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = fs::remove_dir(&cgroup);
    assert!(
        exited,
        "{tag}: the supervisor trusted descriptor 3: {stderr}"
    );
    assert!(untouched, "{tag}: the cgroup was killed by hand: {stderr}");
    assert!(!output.status.success(), "{tag}: {stderr}");
    assert!(stderr.contains("not by hand; refusing"), "{tag}: {stderr}");
    stderr
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn supervise_run_by_hand_refuses_and_touches_nothing() {
    let closed = supervise_with("closed", |_| None);
    assert!(closed.contains("descriptor 3 is not open"), "{closed}");
    let file = supervise_with("file", |_| {
        Some(fs::File::open("/dev/null").unwrap().into())
    });
    assert!(file.contains("\"/dev/null\", not a pidfd"), "{file}");
    let stranger = supervise_with("stranger", |sleeper| {
        let pid = rustix::process::Pid::from_raw(sleeper.id() as i32).unwrap();
        Some(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap())
    });
    assert!(stranger.contains("not to the parent"), "{stranger}");
    // A real pidfd of its parent (this test), but the cgroup is not that
    // parent's guardian directory.
    let parent = supervise_with("parent", |_| {
        let me = rustix::process::getpid();
        Some(rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()).unwrap())
    });
    assert!(parent.contains("is not the cgroup directory"), "{parent}");
}
