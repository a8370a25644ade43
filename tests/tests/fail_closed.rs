//! Nothing outlives the switch (issue 12): however the guardian dies, every
//! holder dies within a tick of it, not after the kernel has torn the
//! guardian's eBPF links down (which alone took 300 ms or more).
//!
//! The bound asserted here is loose (50 ms) so a noisy machine passes, and
//! stretched under emulation (`stretched`), where code runs many times
//! slower; the figures are printed, and `cargo xtask bench` measures them
//! properly.

use std::{
    os::fd::{AsFd, OwnedFd},
    time::{Duration, Instant},
};

use e2e::{
    Guardian, Session, proc_status_field, processes, send_signal, stretched, supervisor_of,
    wait_until,
};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::signal::Signal,
};

const BOUND: Duration = Duration::from_millis(50);

/// Starts `n` holders running `sleep 1000` in `session`; their pidfds.
fn start_holders(session: &mut Session, n: usize) -> Vec<OwnedFd> {
    let (rc, _, err) = session.run(&format!(
        "for i in $(seq {n}); do $NS exec --env T=tok -- sleep 1000 > /dev/null 2>&1 & done"
    ));
    assert_eq!(rc, 0, "{err}");
    let leader = session.leader() as u64;
    let holders = || -> Vec<i32> {
        processes()
            .filter(|(_, cmdline)| cmdline == b"sleep\x001000\x00")
            .map(|(pid, _)| pid)
            .filter(|&pid| proc_status_field(pid, "NSsid") == Some(leader))
            .collect()
    };
    assert!(wait_until(Duration::from_secs(30), || holders().len() == n));
    holders()
        .into_iter()
        .map(|pid| {
            let pid = rustix::process::Pid::from_raw(pid).unwrap();
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap()
        })
        .collect()
}

/// Waits until every process behind `pidfds` has exited; how long that
/// took from `start`, or `None` if some outlived 2 s.
fn all_dead(pidfds: &[OwnedFd], start: Instant) -> Option<Duration> {
    let mut alive: Vec<&OwnedFd> = pidfds.iter().collect();
    while !alive.is_empty() {
        let mut fds: Vec<PollFd<'_>> = alive
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let ready = poll(&mut fds, PollTimeout::from(2000u16)).unwrap();
        if ready == 0 {
            return None;
        }
        let exited: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let mut exited = exited.into_iter();
        alive.retain(|_| !exited.next().unwrap_or(false));
    }
    Some(start.elapsed())
}

/// Kills (with `signal`) a guardian whose session has `n` holders, and
/// returns how long until the last holder was dead.
fn death_to_last_holder(tag: &str, n: usize, signal: Signal) -> Duration {
    let guardian = Guardian::start(tag);
    let mut session = Session::start(&guardian);
    assert_eq!(session.run("printf x | $NS put tok").0, 0);
    let holders = start_holders(&mut session, n);
    let start = Instant::now();
    send_signal(guardian.pid(), signal);
    let took = all_dead(&holders, start)
        .unwrap_or_else(|| panic!("{n} holders outlived a guardian killed by {signal}"));
    eprintln!("{signal} to the guardian, {n} holders: last dead after {took:?}");
    took
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn every_holder_dies_within_a_tick_of_a_killed_guardian() {
    for n in [1, 10, 100] {
        let took = death_to_last_holder("killed", n, Signal::SIGKILL);
        assert!(took < stretched(BOUND), "{n} holders: {took:?}");
    }
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_kernel_kills_the_newest_holder_at_its_leaders_exit_before_the_guardian_wakes() {
    let guardian = Guardian::start("early-kill");
    if let Some(why) = guardian.status()["early_kill_error"].as_str() {
        assert!(
            !kernel_at_least(6, 13),
            "the kernel has the kfuncs (6.13+) yet the early kill is off: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let mut session = Session::start(&guardian);
    assert_eq!(session.run("printf x | $NS put tok").0, 0);
    let holders = start_holders(&mut session, 1);
    // A stopped guardian reads no event and kills nothing: only the kernel
    // can. (Its supervisor, which would continue it, is stopped first.)
    let supervisor = supervisor_of(guardian.pid());
    send_signal(supervisor, Signal::SIGSTOP);
    send_signal(guardian.pid(), Signal::SIGSTOP);
    let start = Instant::now();
    session.signal_leader(Signal::SIGKILL);
    let took = all_dead(&holders, start);
    send_signal(guardian.pid(), Signal::SIGCONT);
    send_signal(supervisor, Signal::SIGCONT);
    let took = took.expect("the holder outlived its leader while the guardian was stopped");
    eprintln!("leader SIGKILL to its holder dead, guardian stopped: {took:?}");
    assert!(took < stretched(BOUND), "{took:?}");
    // Once it runs again the guardian wipes, and records the holder dead.
    let recorded = wait_until(Duration::from_secs(5), || {
        guardian
            .audit_of("trigger")
            .iter()
            .any(|r| r["reason"] == "leader_exit" && r["outcome"] == "wiped")
    });
    assert!(recorded, "{:?}", guardian.audit_records());
}

/// True if the running kernel is `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .split(['.', '-'])
        .map(|part| part.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn every_holder_dies_within_a_tick_of_a_crashed_guardian() {
    // A crash, and an abort (where a panic that is not caught ends). A crash
    // is stood in for by SIGILL: a SIGSEGV or SIGBUS sent with kill(2) is
    // absorbed once by Rust's stack-overflow handler, a fault is not.
    for signal in [Signal::SIGILL, Signal::SIGABRT] {
        let took = death_to_last_holder("crashed", 10, signal);
        assert!(took < stretched(BOUND), "{signal}: {took:?}");
    }
}

/// Puts `/proc/sys/kernel/core_pattern` back as it was when dropped.
struct CorePattern(String);

impl CorePattern {
    fn set(pattern: &str) -> Self {
        let path = "/proc/sys/kernel/core_pattern";
        let saved = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, pattern).unwrap();
        Self(saved)
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/core_pattern", self.0.trim_end());
    }
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn no_core_of_a_holder_reaches_a_file_or_a_piped_helper() {
    let guardian = Guardian::start("cores");
    let mut session = Session::start_as_nobody(&guardian);
    let marker = e2e::put_marker(&mut session, "tok");
    let dir = session.dir().to_owned();
    let helper = dir.join("core-helper.sh");
    let piped = dir.join("piped-core");
    std::fs::write(&helper, format!("#!/bin/sh\ncat > {}\n", piped.display())).unwrap();
    let runnable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&helper, runnable).unwrap();
    // The same uid, from outside the session, lowers the core limit to 0
    // (the kernel ignores that limit for pipes, but not 1), then crashes it.
    for pattern in [format!("|{}", helper.display()), "core".to_owned()] {
        let _pattern = CorePattern::set(&pattern);
        let holder = e2e::start_sleeping_holder(&mut session, "tok");
        as_nobody(&format!(
            "prlimit --pid={holder} --core=0 && kill -SEGV {holder}"
        ));
        assert!(wait_until(Duration::from_secs(5), || !e2e::is_alive(
            holder
        )));
        let dumped = cores_in(&dir);
        assert!(
            dumped.is_empty(),
            "{pattern}: a core was dumped: {dumped:?}"
        );
    }
    let (rc, out, _) = session.run("$NS get tok");
    assert_eq!((rc, out), (0, marker), "a crashed holder costs no secret");
}

/// Runs `script` with `sh -c` as `nobody`, outside every session under
/// test; it must succeed.
fn as_nobody(script: &str) {
    let done = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .status()
        .unwrap();
    assert!(done.success(), "{script}");
}

/// The core files in `dir` (written there, or by the piped helper), once
/// any dump under way has had time to land.
fn cores_in(dir: &std::path::Path) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("core") && name != "core-helper.sh" || name == "piped-core")
        .collect()
}

/// A shell of the session that ran `x=$(get)` holds the value in its memory
/// without being a holder: the same uid from outside the session raises its
/// core limit and sends it SIGSEGV; it dies without a core, also when a
/// handler of its own raises the signal again, and when the outsider only
/// lowers its file-size limit so that the kernel raises SIGXFSZ in the
/// shell's own name. Sent from inside the session, SIGSEGV still dumps core.
#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn no_core_of_a_ward_is_forced_from_outside_its_session() {
    let guardian = Guardian::start("forced-core");
    let mut session = Session::start_as_nobody(&guardian);
    e2e::put_marker(&mut session, "tok");
    let dir = session.dir().to_owned();
    let _pattern = CorePattern::set("core");
    let segv = "prlimit --pid=WARD --core=unlimited && kill -SEGV WARD".to_owned();
    let cases = [
        (
            "sh -c 'x=$($NS get tok); while :; do sleep 1; done'",
            segv.clone(),
        ),
        // Catches SIGSEGV and raises it again at itself, as an interactive
        // bash does: the raise comes from inside the session.
        (
            "bash -c 'trap \"trap - SEGV; kill -SEGV \\$\\$\" SEGV; x=$($NS get tok); while :; do sleep 0.1; done'",
            segv,
        ),
        // Writes past its file-size limit itself (printf is a builtin).
        (
            "sh -c 'x=$($NS get tok); while [ ! -e go ]; do sleep 0.1; done; printf %20000s x > big; sleep 1000'",
            format!(
                "prlimit --pid=WARD --core=unlimited --fsize=10000 && touch {}/go",
                dir.display()
            ),
        ),
    ];
    for (ward, attack) in cases {
        let (rc, out, err) = session.run(&format!("{ward} > /dev/null 2>&1 & echo $!"));
        assert_eq!(rc, 0, "{err}");
        let ward: i32 = String::from_utf8_lossy(&out).trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        as_nobody(&attack.replace("WARD", &ward.to_string()));
        assert!(wait_until(Duration::from_secs(5), || !e2e::is_alive(ward)));
        let dumped = cores_in(&dir);
        assert!(dumped.is_empty(), "a core was forced: {dumped:?}");
    }

    // The user's own kill, from inside the session, is not an attack.
    let (rc, _, err) = session.run("sh -c 'ulimit -c unlimited; kill -SEGV $$'; true");
    assert_eq!(rc, 0, "{err}");
    let dumped = cores_in(&dir);
    assert!(
        !dumped.is_empty(),
        "the session's own SIGSEGV dumped no core"
    );
}

/// Stores `tok` in `session` and starts a holder of it that FUSE keeps from
/// dying once killed (tests/helpers/fuse_trap.py); its pid, or `None`
/// (having said why) where FUSE is not available.
fn trapped_holder(session: &mut Session) -> Option<i32> {
    assert_eq!(session.run("printf x | $NS put tok").0, 0);
    let trap = concat!(env!("CARGO_MANIFEST_DIR"), "/helpers/fuse_trap.py");
    session.spawn(&format!(
        "$NS exec --env T=tok -- /usr/bin/python3 {trap} mnt > trap.out 2>&1"
    ));
    let said = || std::fs::read_to_string(session.dir().join("trap.out")).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(10), || !said().is_empty()));
    if said().starts_with("no fuse") {
        eprintln!("skipped: FUSE is not available here ({})", said().trim());
        return None;
    }
    assert!(said().starts_with("trapped"), "{}", said());
    let leader = session.leader() as u64;
    let holder = processes()
        .filter(|(_, cmdline)| cmdline.windows(12).any(|w| w == b"fuse_trap.py"))
        .map(|(pid, _)| pid)
        .find(|&pid| proc_status_field(pid, "NSsid") == Some(leader));
    Some(holder.expect("the trapped holder"))
}

/// True while a thread of `pid` is alive: a killed holder's main thread
/// dies at once, and the one FUSE holds is what matters.
fn threads_alive(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| tasks.flatten().any(|task| e2e::is_alive_task(&task.path())))
        .unwrap_or(false)
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_holder_trapped_by_fuse_is_freed_and_the_trigger_says_so() {
    let guardian = Guardian::start("fuse-trap");
    let mut session = Session::start(&guardian);
    let Some(holder) = trapped_holder(&mut session) else {
        return;
    };
    assert_eq!(session.run("$NS revoke tok").0, 0);
    let freed = wait_until(Duration::from_secs(3), || !threads_alive(holder));
    assert!(freed, "the trapped holder outlived its trigger");
    let aborted = guardian.audit_of("fuse_abort");
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    let recorded = || {
        let triggers = guardian.audit_of("trigger");
        triggers.last().map(|record| record["outcome"].clone())
    };
    assert!(wait_until(Duration::from_secs(3), || recorded()
        == Some("wiped".into())));
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_holder_trapped_by_fuse_dies_with_a_killed_guardian() {
    let guardian = Guardian::start("fuse-death");
    let mut session = Session::start(&guardian);
    let Some(holder) = trapped_holder(&mut session) else {
        return;
    };
    send_signal(guardian.pid(), Signal::SIGKILL);
    // The supervisor frees it: nothing would stop a read of its memory now.
    assert!(
        wait_until(Duration::from_secs(3), || !threads_alive(holder)),
        "a holder trapped by FUSE outlived the guardian"
    );
}
