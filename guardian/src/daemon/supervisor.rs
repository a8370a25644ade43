//! The supervisor: fail closed when the guardian dies.
//!
//! If the guardian is SIGKILLed, OOM-killed or crashes, its secrets die with
//! its memory (memfd_secret pages are zeroed by the kernel when freed), but the
//! holders still have theirs. The supervisor is a separate process, started by
//! the guardian as a fresh exec of the same binary (so it holds none of the
//! guardian's memory), in a session of its own and deaf to SIGINT, SIGTERM and
//! SIGHUP. It blocks on a pidfd of the guardian; when that reports the exit, it
//! writes `1` to the guardian's cgroup.kill, which kills every holder of every
//! secret in one step, then removes the cgroups and exits. The guardian treats
//! the supervisor's death as a trigger for everything (fail closed), and its
//! eBPF programs kill anyone who ptraces either of them.
//!
//! It is also a watchdog against stops. A PTRACE_ATTACH is killed at syscall
//! entry, but the kernel has already queued the SIGSTOP that attach sends, so
//! the guardian would stay stopped (and its switch frozen) after the attacker
//! dies. Every `WATCHDOG_MS` milliseconds the supervisor looks, and continues
//! a stopped guardian with SIGCONT.

use std::{
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::signal::{SigHandler, Signal, signal},
};

use crate::os::{
    cgroup, hardening,
    process::{self, Pid, Pidfd},
};

/// Returns once the guardian has begun to exit (the kernel's death notice,
/// when there is one: it comes before the guardian's teardown, the pidfd
/// only after) or has exited (or cannot be watched), continuing it whenever
/// it is found stopped.
fn watch(guardian: &Pidfd, death_notice: Option<&OwnedFd>) {
    loop {
        let mut fds: Vec<PollFd<'_>> = std::iter::once(guardian.as_fd())
            .chain(death_notice.map(AsFd::as_fd))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::from(WATCHDOG_MS)) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return,
            Err(err) => {
                // Cannot watch the guardian: fail closed now rather than never.
                eprintln!("ningen-shikkaku supervisor: poll failed ({err}); killing holders");
                return;
            }
        }
        if process::is_stopped(guardian.pid()) {
            let _ = guardian.send(libc::SIGCONT);
        }
    }
}

/// Why the descriptor at [`GUARDIAN_FD`] is not trusted as the guardian's pidfd.
#[derive(Debug, thiserror::Error)]
enum NotTheGuardian {
    /// Nothing is open at that number.
    #[error("descriptor {GUARDIAN_FD} is not open ({0})")]
    NotOpen(io::Error),
    /// It is open, but on something other than a pidfd.
    #[error("descriptor {GUARDIAN_FD} is {0:?}, not a pidfd")]
    NotAPidfd(PathBuf),
    /// Its fdinfo names no live process.
    #[error("descriptor {GUARDIAN_FD} names no live process")]
    NoPid,
    /// It refers to a process other than the one that started the supervisor.
    #[error("descriptor {GUARDIAN_FD} refers to PID {pid}, not to the parent, PID {parent}")]
    NotTheParent {
        /// The process the pidfd refers to.
        pid: Pid,
        /// The supervisor's parent.
        parent: i32,
    },
    /// The cgroup directory is not the parent's own.
    #[error("{given:?} is not the cgroup directory of the parent guardian ({expected:?})")]
    NotItsCgroup {
        /// The directory given.
        given: PathBuf,
        /// The parent's.
        expected: Option<PathBuf>,
    },
}

/// The guardian's pidfd, inherited at [`GUARDIAN_FD`], once checked: the
/// descriptor is open, is a pidfd, and refers to this process's parent (the
/// guardian starts the supervisor itself).
fn inherited_guardian() -> Result<Pidfd, NotTheGuardian> {
    let link = std::fs::read_link(format!("/proc/self/fd/{GUARDIAN_FD}"))
        .map_err(NotTheGuardian::NotOpen)?;
    if link.as_os_str() != "anon_inode:[pidfd]" {
        return Err(NotTheGuardian::NotAPidfd(link));
    }
    let pid = pid_of_pidfd(GUARDIAN_FD).ok_or(NotTheGuardian::NoPid)?;
    let parent = nix::unistd::getppid().as_raw();
    if pid.raw() != parent {
        return Err(NotTheGuardian::NotTheParent { pid, parent });
    }
    // SAFETY: the descriptor is open (checked above) and nothing in this
    // process owns it: it came across exec, and only this call takes it.
    let fd = unsafe { OwnedFd::from_raw_fd(GUARDIAN_FD) };
    Ok(Pidfd::from_owned(fd, pid))
}

/// The parent guardian's pidfd, once both it and `instance` (the parent's
/// own cgroup directory) check out.
fn started_by_a_guardian(instance: &Path) -> Result<Pidfd, NotTheGuardian> {
    let guardian = inherited_guardian()?;
    let expected = cgroup::instance_dir(guardian.pid());
    if expected.as_deref() != Some(instance) {
        return Err(NotTheGuardian::NotItsCgroup {
            given: instance.to_path_buf(),
            expected,
        });
    }
    Ok(guardian)
}

/// The guardian's death notice, inherited at [`DEATH_FD`] when the guardian
/// runs with eBPF: a BPF map (the ring buffer the exit program writes to).
/// Anything else there is left alone; the pidfd still reports the death.
fn inherited_death_notice() -> Option<OwnedFd> {
    let link = std::fs::read_link(format!("/proc/self/fd/{DEATH_FD}")).ok()?;
    if link.as_os_str() != "anon_inode:bpf-map" {
        return None;
    }
    // SAFETY: the descriptor is open (its link was read) and nothing in this
    // process owns it: it came across exec, and only this call takes it.
    Some(unsafe { OwnedFd::from_raw_fd(DEATH_FD) })
}

/// The pid the pidfd at `fd` refers to, from /proc/self/fdinfo (-1, so none,
/// once that process has exited).
fn pid_of_pidfd(fd: i32) -> Option<Pid> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()?;
    Pid::new(pid)
}

/// The descriptor number the guardian's pidfd has in the supervisor.
const GUARDIAN_FD: i32 = 3;
/// The descriptor number of the guardian's death notice (a BPF ring buffer)
/// in the supervisor, when eBPF is loaded.
const DEATH_FD: i32 = 4;
/// How often, in milliseconds, the supervisor checks that the guardian is not stopped.
const WATCHDOG_MS: u16 = 50;

/// Starts the supervisor for the guardian's cgroup directory `instance`,
/// handing it the guardian's pidfd and, with eBPF, the ring that announces
/// the guardian's death.
pub fn spawn(instance: &Path, death_notice: Option<BorrowedFd<'_>>) -> io::Result<Child> {
    let me = Pidfd::open(Pid::current())?;
    // Copies above every number they are moved to, so that moving one
    // cannot overwrite the other.
    let pidfd = high_copy(me.as_fd())?;
    let notice = death_notice.map(high_copy).transpose()?;
    let moves: Vec<(i32, i32)> = std::iter::once((pidfd.as_raw_fd(), GUARDIAN_FD))
        .chain(notice.as_ref().map(|fd| (fd.as_raw_fd(), DEATH_FD)))
        .collect();
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("ningen-shikkaku")
        .arg("supervise")
        .arg("--cgroup")
        .arg(instance)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // dup2 gives the copies at their numbers no close-on-exec flag.
    // SAFETY: between fork and exec the child only calls dup2, which is
    // async-signal-safe, on descriptors it inherited.
    unsafe {
        command.pre_exec(move || {
            for &(from, to) in &moves {
                if libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn()
}

/// A close-on-exec copy of `fd` numbered above the supervisor's inherited ones.
fn high_copy(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let high = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(DEATH_FD + 1))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// The `supervise` subcommand: waits for the guardian to die, then kills the
/// cgroup tree. Returns once the guardian is gone.
///
/// It runs only as the guardian starts it: with a pidfd of its parent at
/// [`GUARDIAN_FD`] and that parent's own cgroup directory. Anything else
/// (someone running it by hand) is refused before it touches anything. A
/// guardian whose supervisor refused sees it exit, and wipes everything.
pub fn run(instance: &Path) -> anyhow::Result<()> {
    // The inherited descriptors first: anything opened before them could
    // take a number one of them should have had.
    let guardian = started_by_a_guardian(instance).map_err(|why| {
        anyhow::anyhow!("supervise is started by the guardian itself, not by hand; refusing: {why}")
    })?;
    let death_notice = inherited_death_notice();
    hardening::forbid_core_dumps()?;
    // Own session, and deaf to the signals a terminal or a service manager
    // sends the guardian's group: only the guardian's death ends this process.
    let _ = nix::unistd::setsid();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { signal(sig, SigHandler::SigIgn) }?;
    }
    // Opened now, so the kill needs no path lookup when it counts.
    let kill = std::fs::OpenOptions::new()
        .write(true)
        .open(instance.join("cgroup.kill"));
    watch(&guardian, death_notice.as_ref());
    match kill {
        Ok(mut kill) => match std::io::Write::write_all(&mut kill, b"1") {
            // A guardian that stopped cleanly removed its cgroups itself.
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {}
            written => written?,
        },
        Err(_) if instance.exists() => cgroup::kill_tree(instance)?,
        Err(_) => {}
    }
    let aborted = cgroup::free_stuck(instance);
    if !aborted.is_empty() {
        eprintln!(
            "ningen-shikkaku supervisor: aborted FUSE connection(s) {aborted:?} that kept holders alive"
        );
    }
    cgroup::remove_tree(instance);
    Ok(())
}
