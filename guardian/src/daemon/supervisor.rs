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
//! dies. Every [`WATCHDOG`] the supervisor looks, and continues a stopped
//! guardian with SIGCONT.

use std::{
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::Path,
    process::{Child, Command, Stdio},
};

use nix::sys::signal::{SigHandler, Signal, signal};

use crate::os::{
    cgroup, hardening,
    process::{self, Pid, Pidfd},
};

/// Returns once the guardian has exited (or cannot be watched), continuing it
/// whenever it is found stopped.
fn watch(guardian: &Pidfd) {
    let mut poll = libc::pollfd {
        fd: guardian.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd and a timeout in milliseconds.
        let rc = unsafe { libc::poll(&mut poll, 1, WATCHDOG.as_millis() as i32) };
        if rc > 0 {
            return;
        }
        let err = io::Error::last_os_error();
        if rc < 0 && err.kind() != io::ErrorKind::Interrupted {
            // Cannot watch the guardian: fail closed now rather than never.
            eprintln!("ningen-shikkaku supervisor: poll failed ({err}); killing holders");
            return;
        }
        if process::is_stopped(guardian.pid()) {
            let _ = guardian.send(libc::SIGCONT);
        }
    }
}

/// The pid a pidfd refers to, from /proc/self/fdinfo.
fn pid_of_pidfd(fd: &OwnedFd) -> Option<Pid> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
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
/// How often the supervisor checks that the guardian is not stopped.
const WATCHDOG: std::time::Duration = std::time::Duration::from_millis(50);

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
    // SAFETY: between fork and exec the child only calls dup2, which is
    // async-signal-safe; dup2 leaves the new descriptor without CLOEXEC.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, GUARDIAN_FD) < 0 {
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
    // SAFETY: the guardian placed its pidfd at this number just before exec.
    let fd = unsafe { OwnedFd::from_raw_fd(GUARDIAN_FD) };
    match pid_of_pidfd(&fd) {
        Some(pid) => watch(&Pidfd::from_owned(fd, pid)),
        // Not a pidfd: nothing can be watched, so fail closed at once.
        None => eprintln!("ningen-shikkaku supervisor: no guardian pidfd; killing holders"),
    }
    if instance.exists() {
        cgroup::kill_tree(instance)?;
        cgroup::remove_tree(instance);
    }
    Ok(())
}
