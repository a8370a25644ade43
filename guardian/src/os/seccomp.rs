//! The guardian's seccomp allowlist: once initialisation is done (programs
//! loaded, socket bound, log open), only these system calls are allowed; every
//! other one fails with EPERM. The list is data, one entry per syscall, each
//! with the code that needs it, so a reviewer can check every line.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// One allowed system call and why.
pub struct Allowed {
    /// The syscall number.
    pub nr: i64,
    /// Who needs it.
    pub reason: &'static str,
}

const fn allow(nr: i64, reason: &'static str) -> Allowed {
    Allowed { nr, reason }
}

/// Syscalls the running guardian needs (found with `strace -f` over the
/// end-to-end tests; see docs/HARDENING.md).
pub const ALLOWLIST: &[Allowed] = &[
    // The tokio runtime: epoll reactor, eventfd waker, timers via epoll timeouts.
    allow(libc::SYS_epoll_wait, "tokio reactor: wait for readiness"),
    allow(
        libc::SYS_epoll_pwait,
        "tokio reactor on libcs that use epoll_pwait",
    ),
    allow(libc::SYS_epoll_ctl, "tokio: register sockets and pidfds"),
    allow(libc::SYS_futex, "std/tokio synchronisation"),
    allow(
        libc::SYS_flock,
        "the audit log's writer lock, released at shutdown (nix panics if it cannot)",
    ),
    allow(
        libc::SYS_rseq,
        "glibc registers each thread's restartable sequence (audit syncer)",
    ),
    allow(
        libc::SYS_set_robust_list,
        "glibc thread start-up (audit syncer)",
    ),
    allow(libc::SYS_sched_yield, "std spin loops"),
    allow(
        libc::SYS_clock_gettime,
        "clock::now_ns and tokio timers when the vDSO is absent",
    ),
    allow(libc::SYS_getrandom, "std HashMap seeds"),
    allow(
        libc::SYS_clock_nanosleep,
        "cgroup::remove_tree waits for a cgroup to empty",
    ),
    allow(
        libc::SYS_nanosleep,
        "std::thread::sleep on libcs that use nanosleep",
    ),
    // Memory: allocator, memsec, memfd_secret.
    allow(libc::SYS_mmap, "allocator and secret_mem (memsec)"),
    allow(libc::SYS_munmap, "allocator and secret_mem free"),
    allow(libc::SYS_mremap, "allocator growth"),
    allow(libc::SYS_brk, "allocator"),
    allow(libc::SYS_mprotect, "secret_mem guard pages (memsec)"),
    allow(libc::SYS_madvise, "secret_mem MADV_DONTDUMP (memsec)"),
    allow(libc::SYS_mlock, "secret_mem locks the secret's pages"),
    allow(libc::SYS_munlock, "secret_mem unlocks before free"),
    allow(libc::SYS_memfd_secret, "secret_mem allocation"),
    allow(
        libc::SYS_memfd_create,
        "secret_file: a secret delivered as a file (exec --file)",
    ),
    allow(
        libc::SYS_ftruncate,
        "secret_mem sizes the memfd_secret file; the audit log cuts its zero room",
    ),
    // Files and descriptors.
    allow(libc::SYS_read, "sockets, /proc files, pidfds"),
    allow(libc::SYS_write, "sockets, audit log, stderr, cgroup.procs"),
    allow(
        libc::SYS_pwrite64,
        "cgroup.kill of a grant; audit records written in place",
    ),
    allow(
        libc::SYS_writev,
        "replies: frame and secret bytes in one call",
    ),
    allow(libc::SYS_close, "every descriptor"),
    allow(libc::SYS_openat, "/proc/PID/status, cgroup files"),
    allow(libc::SYS_statx, "std::fs reads size their buffer"),
    allow(libc::SYS_newfstatat, "std::fs metadata on some libcs"),
    allow(libc::SYS_fstat, "std::fs metadata on some libcs"),
    allow(libc::SYS_lseek, "std::fs reads"),
    allow(
        libc::SYS_pread64,
        "re-reading a connected peer's /proc status and a grant's cgroup.events",
    ),
    allow(
        libc::SYS_getdents64,
        "process::descendants_of scans /proc; cgroup clean-up",
    ),
    allow(libc::SYS_readlinkat, "process::exe_of reads /proc/PID/exe"),
    allow(libc::SYS_fdatasync, "audit log: on disk before the answer"),
    allow(libc::SYS_fcntl, "tokio/std set descriptor flags"),
    allow(libc::SYS_ioctl, "tokio FIONBIO on accepted sockets"),
    allow(libc::SYS_unlinkat, "remove the socket at shutdown"),
    allow(
        libc::SYS_renameat,
        "audit log rotation (audit.jsonl -> audit.jsonl.1)",
    ),
    allow(
        libc::SYS_renameat2,
        "audit log rotation on libcs that use renameat2",
    ),
    allow(libc::SYS_mkdirat, "cgroup of each exec"),
    // Sockets.
    allow(libc::SYS_accept4, "daemon::accept"),
    allow(libc::SYS_recvfrom, "socket reads"),
    allow(libc::SYS_recvmsg, "socket reads"),
    allow(libc::SYS_sendto, "socket writes"),
    allow(libc::SYS_sendmsg, "socket writes"),
    allow(libc::SYS_getsockopt, "SO_PEERCRED in peer::Peer"),
    allow(libc::SYS_connect, "logind: the D-Bus system bus"),
    allow(
        libc::SYS_geteuid,
        "logind: D-Bus EXTERNAL authentication sends the euid",
    ),
    allow(libc::SYS_shutdown, "closing client connections"),
    // Processes.
    allow(libc::SYS_getpid, "Pid::current"),
    allow(libc::SYS_gettid, "tracing"),
    allow(libc::SYS_getsid, "process::session_of"),
    allow(libc::SYS_pidfd_open, "Pidfd::open for leaders and holders"),
    allow(libc::SYS_pidfd_send_signal, "Pidfd::kill"),
    allow(
        libc::SYS_ppoll,
        "Pidfd::is_alive on libcs that poll through ppoll",
    ),
    allow(
        libc::SYS_bpf,
        "kernel::KernelLink map updates and reads, tamper program links",
    ),
    allow(
        libc::SYS_perf_event_open,
        "KernelLink::arm attaches the tamper tracepoints on the first put",
    ),
    // Signals and exit.
    allow(libc::SYS_rt_sigaction, "tokio signal handlers"),
    allow(libc::SYS_rt_sigprocmask, "std and tokio signal masks"),
    allow(libc::SYS_rt_sigreturn, "return from signal handlers"),
    allow(libc::SYS_sigaltstack, "std stack-overflow handler"),
    allow(libc::SYS_exit, "thread exit"),
    allow(libc::SYS_exit_group, "process exit"),
    #[cfg(target_arch = "x86_64")]
    allow(libc::SYS_poll, "Pidfd::is_alive"),
    #[cfg(target_arch = "x86_64")]
    allow(libc::SYS_readlink, "process::exe_of reads /proc/PID/exe"),
    #[cfg(target_arch = "x86_64")]
    allow(libc::SYS_unlink, "remove the socket at shutdown"),
    #[cfg(target_arch = "x86_64")]
    allow(
        libc::SYS_rename,
        "audit log rotation (audit.jsonl -> audit.jsonl.1)",
    ),
    #[cfg(target_arch = "x86_64")]
    allow(libc::SYS_mkdir, "cgroup of each exec"),
    #[cfg(target_arch = "x86_64")]
    allow(libc::SYS_rmdir, "remove an exec's cgroup once empty"),
];

/// Errors building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused the rules or the kernel refused the filter.
    #[error("seccomp: {0}")]
    Filter(#[from] seccompiler::Error),
    /// seccompiler could not compile the filter.
    #[error("seccomp: {0}")]
    Backend(#[from] seccompiler::BackendError),
    /// This architecture has no seccompiler target.
    #[error("seccomp: unsupported architecture")]
    Architecture,
}

/// Compiles the allowlist: allowed calls pass, all others fail with EPERM.
/// `socket` passes only for a Unix stream socket: the connection to the
/// D-Bus system bus (`daemon::logind`), made again whenever the bus comes
/// back.
pub fn filter() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = ALLOWLIST
        .iter()
        .map(|entry| (entry.nr, Vec::new()))
        .collect();
    rules.insert(libc::SYS_socket, vec![unix_stream_sockets_only()?]);
    let arch =
        TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SeccompError::Architecture)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )?;
    Ok(filter.try_into()?)
}

/// socket(AF_UNIX, SOCK_STREAM | any flags, _).
fn unix_stream_sockets_only() -> Result<seccompiler::SeccompRule, SeccompError> {
    use seccompiler::{SeccompCmpArgLen::Dword, SeccompCmpOp, SeccompCondition};
    let family = SeccompCondition::new(0, Dword, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?;
    let kind = SeccompCondition::new(
        1,
        Dword,
        SeccompCmpOp::MaskedEq(0xf),
        libc::SOCK_STREAM as u64,
    )?;
    Ok(seccompiler::SeccompRule::new(vec![family, kind])?)
}

/// Installs the filter on every thread of the process. Returns the number of
/// allowed syscalls.
pub fn install() -> Result<usize, SeccompError> {
    seccompiler::apply_filter_all_threads(&filter()?)?;
    Ok(ALLOWLIST.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_unique_and_has_a_reason() {
        let mut seen = std::collections::HashSet::new();
        for entry in ALLOWLIST {
            assert!(seen.insert(entry.nr), "syscall {} listed twice", entry.nr);
            assert!(!entry.reason.is_empty());
        }
    }

    /// In a forked child: install the filter, then an unlisted syscall
    /// (socket, execve, ptrace) fails with EPERM while a listed one works,
    /// and of sockets only a Unix stream socket can be made.
    #[test]
    fn unlisted_syscalls_are_refused_with_eperm() {
        let program = filter().unwrap();
        // SAFETY: the child only makes raw syscalls and calls _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let code = (|| {
                if seccompiler::apply_filter(&program).is_err() {
                    return 10;
                }
                for nr in [libc::SYS_socket, libc::SYS_execve, libc::SYS_ptrace] {
                    // SAFETY: raw syscalls with harmless arguments; each is refused.
                    let rc = unsafe { libc::syscall(nr, 0, 0, 0) };
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    if rc != -1 || errno != Some(libc::EPERM) {
                        return 11;
                    }
                }
                // SAFETY: getpid has no preconditions.
                if unsafe { libc::syscall(libc::SYS_getpid) } <= 0 {
                    return 12;
                }
                // Sockets: a Unix stream socket only (the system bus).
                let socket = |family, kind| {
                    // SAFETY: socket has no memory arguments; a descriptor
                    // made here dies with this child.
                    unsafe { libc::socket(family, kind, 0) }
                };
                if socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC) < 0 {
                    return 13;
                }
                for (family, kind) in [
                    (libc::AF_INET, libc::SOCK_STREAM),
                    (libc::AF_UNIX, libc::SOCK_DGRAM),
                    (libc::AF_NETLINK, libc::SOCK_RAW),
                ] {
                    if socket(family, kind) != -1 {
                        return 14;
                    }
                }
                0
            })();
            // SAFETY: _exit in a forked child, without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
