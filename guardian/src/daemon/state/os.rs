//! Everything the state machine does to the operating system, behind one
//! narrow interface: signal and watch processes, read /proc facts, contain and
//! kill holder trees, write the kernel maps, start timers, append audit
//! records, read the clock. Production implements it with pidfds, cgroups,
//! the eBPF link, tokio tasks and the audit file (`host`); the unit tests with
//! a fake world that runs in-process, unprivileged, in microseconds.

#![forbid(unsafe_code)]

use std::{
    collections::HashSet,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use std::os::fd::OwnedFd;

use guardian_ebpf::{FileKey, HolderState};

use super::Msg;
use crate::{
    audit::{Entry, commit::Unsynced},
    kernel::KernelError,
    os::{
        cgroup::GrantId,
        hardening::Protections,
        peer::Peer,
        process::{Pid, Status, Uid},
    },
    protocol::AuditFlushes,
};

/// A handle on one process that stays bound to it after it exits, so a signal
/// never reaches a process that reused its pid (a pidfd in production).
pub trait Process: Send + Sync + 'static {
    /// The pid it was opened for.
    fn pid(&self) -> Pid;
    /// Sends `signal`; a process that already exited is not an error.
    fn signal(&self, signal: i32) -> io::Result<()>;
    /// True until the process has exited.
    fn is_alive(&self) -> bool;

    /// Sends SIGKILL.
    fn kill(&self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }
}

/// The kernel maps the eBPF programs read, and the tamper programs' switch.
pub trait KernelMaps {
    /// Attaches the tamper programs, if they are not attached yet.
    fn arm(&mut self) -> Result<(), KernelError>;
    /// Detaches the tamper programs.
    fn disarm(&mut self);
    /// True while the tamper programs are attached.
    fn is_armed(&self) -> bool;
    /// Starts reporting the exit and hangup of `leader`, and protects the
    /// processes that may ask for its secrets (session `sid`, descendants),
    /// which belong to `owner`.
    fn watch_leader(
        &mut self,
        leader: Pid,
        sid: Option<Pid>,
        owner: Uid,
    ) -> Result<(), KernelError>;
    /// Stops watching `leader` itself (not-found is fine).
    fn unwatch_leader(&mut self, leader: Pid);
    /// Forgets the members of the sessions of `leaders`, which walks the
    /// whole ward map (not-found is fine).
    fn forget_wards_of(&mut self, leaders: &[Pid]);
    /// Marks `pid` as a holder of `grant` in `state`; its children inherit both.
    fn set_holder(
        &mut self,
        pid: Pid,
        grant: GrantId,
        state: HolderState,
    ) -> Result<(), KernelError>;
    /// Forgets `pid` as a holder (not-found is fine).
    fn remove_holder(&mut self, pid: Pid);
    /// Asks the kernel to SIGKILL holder `pid` itself when `leader` exits,
    /// where it can (best effort: the guardian's own kill follows anyway).
    fn kill_at_exit_of(&mut self, leader: Pid, pid: Pid);
    /// Records `owner` as the uid of `grant`'s holders.
    fn own_grant(&mut self, grant: GrantId, owner: Uid) -> Result<(), KernelError>;
    /// Forgets `grant`'s owner (not-found is fine).
    fn forget_grant(&mut self, grant: GrantId);
    /// Lets only `grant`'s holders open the secret file `file`.
    fn guard_file(&mut self, file: FileKey, grant: GrantId) -> Result<(), KernelError>;
    /// Forgets the secret file `file`.
    fn forget_file(&mut self, file: FileKey);
    /// Leader events the programs dropped because their ring buffer was full.
    fn dropped_events(&self) -> u64;
    /// The stamp of `pid`'s environment, a new one for a ward that has
    /// none; `None` while an exec replaces it, or for no ward.
    fn environ_stamp(&mut self, pid: Pid) -> Option<u64>;
    /// The uid whose values ward `pid` may carry (its session's owner), or
    /// `None` for no ward.
    fn ward_owner(&self, pid: Pid) -> Option<Uid>;
    /// The stamp `pid`'s environment has now, unless an exec replaces it.
    fn current_stamp(&self, pid: Pid) -> Option<u64>;
    /// Lists `stamp` as an environment (read from `pid`) that holds no
    /// value, which anyone may read, or takes it off that list.
    fn set_environ_clean(&mut self, stamp: u64, pid: Pid, clean: bool) -> Result<(), KernelError>;
    /// True while `stamp` is listed as an environment that holds no value.
    fn is_environ_clean(&self, stamp: u64) -> bool;
    /// Holder events the programs dropped because their ring buffer was full.
    fn holder_events_lost(&self) -> u64;
    /// Every holder in the kernel map, with its grant.
    fn holders(&self) -> Vec<(Pid, GrantId)>;
    /// Tamper attempts each uid made past the kernel's rate limit, in total.
    fn tamper_suppressed(&self) -> Vec<(Uid, u64)>;
    /// Tamper records lost to a full tamper ring buffer, in total.
    fn tamper_lost(&self) -> u64;
    /// Why the BPF LSM program is not in force, or `None` when it is.
    fn lsm_error(&self) -> Option<&str>;
    /// Why the kernel does not kill a leader's holder at the leader's exit
    /// itself, or `None` when it does.
    fn early_kill_error(&self) -> Option<&str>;
    /// Which read paths the programs stop, and which stay open here.
    fn read_paths(&self) -> crate::protocol::ReadPaths;
}

/// A secret delivered as a file (`exec --file`): a sealed memfd in
/// production.
pub trait SecretFile: Send + 'static {
    /// A descriptor of it, for the holder.
    fn handle(&self) -> io::Result<OwnedFd>;
    /// How the kernel's programs recognise it.
    fn key(&self) -> FileKey;
    /// Zeroes its bytes for every reader.
    fn wipe(&mut self);
}

/// One container per grant, whose whole tree one call kills (cgroup v2).
pub trait Containment {
    /// Moves `pid` into the container of `grant`, creating it if needed;
    /// returns the container `pid` was in.
    fn add(&self, grant: GrantId, pid: Pid) -> io::Result<PathBuf>;
    /// Moves everything in the container of `grant` back to `origin`, as
    /// when the pid that `add` moved had come to name another process.
    /// Returns those moved.
    fn restore(&self, grant: GrantId, origin: &Path) -> io::Result<Vec<Pid>>;
    /// Kills everything in the container of `grant`; false when it has none.
    fn kill(&self, grant: GrantId) -> io::Result<bool>;
    /// True while a live process is left in the container of `grant`.
    fn populated(&self, grant: GrantId) -> bool;
    /// The processes in the container of `grant` now.
    fn members(&self, grant: GrantId) -> io::Result<HashSet<Pid>>;
    /// Removes the container of `grant` if it is empty; false if it is not
    /// gone (its handles are then kept, for a later try).
    fn remove(&self, grant: GrantId) -> bool;
}

/// Background work started for the state machine (a timer, an exit watcher).
/// Dropping it cancels the work, so a secret's timer dies with the secret.
pub struct Task(Option<Box<dyn FnOnce() + Send>>);

impl Task {
    /// A task that `cancel` stops.
    pub fn new(cancel: impl FnOnce() + Send + 'static) -> Self {
        Self(Some(Box::new(cancel)))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel();
        }
    }
}

/// The operating system as the state machine sees it.
pub trait Os {
    /// A process handle.
    type Process: Process;
    /// The eBPF link.
    type Kernel: KernelMaps;
    /// Per-grant containment.
    type Containment: Containment;
    /// A secret delivered as a file.
    type SecretFile: SecretFile;

    /// Now, for TTLs and waits.
    fn now(&self) -> Instant;
    /// Now on the kernel's monotonic clock, the one eBPF events carry.
    fn now_ns(&self) -> u64;

    /// The guardian's own pid.
    fn guardian(&self) -> Pid;
    /// A handle on `pid`; ESRCH when there is no such process.
    fn open(&self, pid: Pid) -> io::Result<Self::Process>;
    /// /proc/PID/status of `pid`.
    fn status(&self, pid: Pid) -> io::Result<Status>;
    /// The status of a connected caller, read through what it connected with;
    /// ESRCH once that very process has exited, whatever now has its pid.
    fn caller_status(&self, peer: &Peer) -> io::Result<Status>;
    /// A handle on the process that connected as `peer`.
    fn open_caller(&self, peer: &Peer) -> io::Result<Self::Process>;
    /// Aborts the FUSE connections that keep `pid` from dying (see
    /// `os::fuse`); their numbers.
    fn free_from_fuse(&self, pid: Pid) -> Vec<u32>;
    /// The session of `pid`; `None` for session 0.
    fn session_of(&self, pid: Pid) -> io::Result<Option<Pid>>;
    /// The pid of the process that `viewer` calls `local` in its own pid
    /// namespace; `None` if it sees no such process.
    fn global_pid(&self, viewer: Pid, local: Pid) -> io::Result<Option<Pid>>;
    /// True if `ancestor` is `pid` or one of its ancestors.
    fn descends_from(&self, pid: Pid, ancestor: Pid) -> bool;
    /// Every live descendant of `roots`, roots excluded.
    fn descendants_of(&self, roots: &HashSet<Pid>) -> Vec<Pid>;
    /// `leader`, its descendants and every process of session `sid`: the
    /// processes that may ask for a secret bound to `leader`.
    fn session_members(&self, leader: Pid, sid: Option<Pid>) -> Vec<Pid>;
    /// True if `pid` has begun to exit (PF_EXITING), though not yet dead.
    fn is_exiting(&self, pid: Pid) -> bool;
    /// `pid`'s environment (`/proc/PID/environ`), read into locked memory
    /// since it may hold a value, judged by `holds`.
    fn environ_holds(&self, pid: Pid, holds: &dyn Fn(&[u8]) -> bool) -> io::Result<bool>;
    /// The executable of `pid`, or a placeholder.
    fn exe_of(&self, pid: Pid) -> String;
    /// `bytes` as a file named after `name`, for a holder to read.
    fn secret_file(&self, name: &str, bytes: &[u8]) -> io::Result<Self::SecretFile>;

    /// Sends `msg` to the state machine once `process` exits.
    fn on_exit(&self, process: Arc<Self::Process>, msg: Msg) -> Task;
    /// Sends `msg` to the state machine after `delay`.
    fn after(&self, delay: Duration, msg: Msg) -> Task;
    /// Continues `process` if it is found stopped over the next little while
    /// (a killed PTRACE_ATTACH leaves its SIGSTOP queued).
    fn continue_if_stopped(&self, process: Arc<Self::Process>);

    /// Appends an audit record; durable only once committed.
    fn audit_write(&mut self, entry: &Entry) -> io::Result<()>;
    /// Appends an audit record and waits until it is durable.
    fn audit_append(&mut self, entry: &Entry) -> io::Result<()>;
    /// Answers `batch` once every record written so far is durable; gives the
    /// batch back if that cannot be arranged.
    fn audit_commit(&mut self, batch: Vec<Unsynced>) -> Result<(), (Vec<Unsynced>, io::Error)>;
    /// How the commits' fdatasyncs have been shared so far.
    fn audit_flushes(&self) -> AuditFlushes;

    /// The guardian's self-protection as it stands.
    fn hardening(&self) -> Protections;
}
