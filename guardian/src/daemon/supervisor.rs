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
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
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

/// Returns once the guardian has exited (or cannot be watched), continuing it
/// whenever it is found stopped.
fn watch(guardian: &Pidfd) {
    loop {
        let mut fds = [PollFd::new(guardian.as_fd(), PollFlags::POLLIN)];
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
/// How often, in milliseconds, the supervisor checks that the guardian is not stopped.
const WATCHDOG_MS: u16 = 50;

/// Starts the supervisor for the guardian's cgroup directory `instance`.
pub fn spawn(instance: &Path) -> io::Result<Child> {
    let me = Pidfd::open(Pid::current())?;
    let fd = me.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("ningen-shikkaku")
        .arg("supervise")
        .arg("--cgroup")
        .arg(instance)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // A pidfd is opened close-on-exec. dup2 gives the copy at GUARDIAN_FD no
    // such flag, but onto itself it does nothing, so when the pidfd already
    // is GUARDIAN_FD the flag is cleared instead.
    // SAFETY: between fork and exec the child only calls dup2 or fcntl, which
    // are async-signal-safe, on a descriptor it inherited.
    unsafe {
        command.pre_exec(move || {
            let rc = match fd == GUARDIAN_FD {
                true => libc::fcntl(fd, libc::F_SETFD, 0),
                false => libc::dup2(fd, GUARDIAN_FD),
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// The `supervise` subcommand: waits for the guardian to die, then kills the
/// cgroup tree. Returns once the guardian is gone.
pub fn run(instance: &Path) -> anyhow::Result<()> {
    hardening::forbid_core_dumps()?;
    // Own session, and deaf to the signals a terminal or a service manager
    // sends the guardian's group: only the guardian's death ends this process.
    let _ = nix::unistd::setsid();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { signal(sig, SigHandler::SigIgn) }?;
    }
    match inherited_guardian() {
        Ok(guardian) => watch(&guardian),
        // Nothing trustworthy to watch, so fail closed at once.
        Err(why) => eprintln!("ningen-shikkaku supervisor: {why}; killing holders"),
    }
    if instance.exists() {
        cgroup::kill_tree(instance)?;
        cgroup::remove_tree(instance);
    }
    Ok(())
}
