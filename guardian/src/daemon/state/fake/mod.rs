//! A fake world for the state machine: processes with the /proc facts the
//! rules read, signals that are recorded (with how many secrets were still
//! alive when each was sent), cgroups, kernel maps, timers on a clock the test
//! moves, and an audit log in memory that can be made to fail. [`Harness`]
//! owns a [`Core`](super::Core) acting on it and delivers what the real OS would report:
//! exits, kernel events, timers. Used by the unit tests and, with the
//! `fuzzing` feature, by the fuzzer that drives the state machine.
//!
//! - this file: the world itself;
//! - [`system`]: the fake [`Os`](super::os::Os) and what it hands out;
//! - [`cgroups`]: the fake containment;
//! - [`harness`]: a state machine on a fake world, and how to drive it.

mod cgroups;
mod harness;
mod system;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use guardian_ebpf::HolderState;

use crate::{
    audit::Entry,
    daemon::state::{Msg, os::Task, sessions::GrantId},
    os::{
        process::{Pid, Uid},
        secret_mem,
    },
};

pub use self::{cgroups::*, harness::*, system::*};

/// The guardian's pid in the fake world.
pub const GUARDIAN: i32 = 900;
/// The supervisor's pid.
pub const SUPERVISOR: i32 = 901;

/// One process, as /proc would describe it.
#[derive(Clone, Debug)]
pub struct Proc {
    /// Its uid.
    pub uid: Uid,
    /// Its parent (0: none).
    pub ppid: i32,
    /// Its session (0: session 0).
    pub sid: i32,
    /// Its thread group: not its pid for a thread.
    pub tgid: i32,
    /// Its tracer (0: none).
    pub tracer: i32,
    /// Its environment, as /proc/PID/environ reads.
    pub environ: Vec<u8>,
    /// A kernel thread.
    pub kernel_thread: bool,
    /// Not exited.
    pub alive: bool,
    /// In its exit, not yet dead (PF_EXITING).
    pub exiting: bool,
    /// Sent SIGKILL; dies at the next [`Harness::settle`] unless `unkillable`.
    pub killed: bool,
    /// Stays alive whatever it is sent (a process stuck in D state).
    pub unkillable: bool,
    /// Its cgroup, as /proc/PID/cgroup names it.
    pub cgroup: PathBuf,
    /// Which process of this pid it is: a handle opened for one birth does
    /// not see the next process to get the pid.
    pub birth: u64,
}

impl Proc {
    /// A live, untraced process of `uid` whose pid and tgid are `pid`.
    pub fn new(uid: Uid, ppid: i32, sid: i32, pid: i32) -> Self {
        Self {
            uid,
            ppid,
            sid,
            tgid: pid,
            tracer: 0,
            environ: Vec::new(),
            kernel_thread: false,
            alive: true,
            exiting: false,
            killed: false,
            unkillable: false,
            cgroup: PathBuf::from("/user.slice"),
            birth: 0,
        }
    }
}

/// Something the state machine did to the world, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A signal to a process.
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        signal: i32,
        /// Secret buffers alive when it was sent.
        secrets_alive: usize,
    },
    /// A cgroup.kill.
    CgroupKill {
        /// The grant whose cgroup it was.
        grant: GrantId,
        /// Secret buffers alive when it was written.
        secrets_alive: usize,
    },
    /// A look for a stopped process to continue.
    ContinueIfStopped {
        /// The process.
        pid: i32,
    },
    /// A secret file's bytes zeroed.
    WipeFile {
        /// Its inode number.
        ino: u64,
    },
}

struct Timer {
    id: u64,
    due: Duration,
    msg: Option<Msg>,
}

struct Watcher {
    id: u64,
    pid: i32,
    msg: Option<Msg>,
}

/// The kernel maps, and failures to make.
#[derive(Default, Debug)]
pub struct KernelState {
    /// The tamper programs are attached.
    pub armed: bool,
    /// Watched leaders.
    pub leaders: HashSet<i32>,
    /// Each ward's environment stamp.
    pub environ_stamps: HashMap<i32, u64>,
    /// Stamps of environments that hold no value.
    pub clean_environs: HashSet<u64>,
    /// The last stamp the guardian gave.
    pub next_stamp: u64,
    /// Holders, with their grant and state.
    pub holders: HashMap<i32, (GrantId, HolderState)>,
    /// The uid of each grant's holders.
    pub grant_owners: HashMap<GrantId, Uid>,
    /// The holder the kernel kills at each leader's exit.
    pub early_kills: HashMap<i32, i32>,
    /// Leaders whose session members were taken out of the ward map, in order.
    pub wards_forgotten: Vec<i32>,
    /// Leader events dropped so far.
    pub dropped: u64,
    /// Holder events dropped so far.
    pub holder_dropped: u64,
    /// Holder fork and exit events are lost (counted in `holder_dropped`)
    /// instead of delivered, as when their ring is full.
    pub lose_holder_events: bool,
    /// Tamper attempts past the rate limit, per uid, in total.
    pub suppressed: BTreeMap<Uid, u64>,
    /// Tamper records lost to a full tamper ring.
    pub tamper_lost: u64,
    /// Attaching the tamper programs fails.
    pub fail_arm: bool,
    /// The holders map is full.
    pub fail_set_holder: bool,
    /// Secret files by inode number, with the grant each was given to.
    pub secret_files: HashMap<u64, GrantId>,
}

/// Everything the fake world holds.
#[derive(Default)]
pub struct World {
    /// Processes by pid, the dead ones too.
    pub procs: HashMap<i32, Proc>,
    /// What the state machine did, in order.
    pub effects: Vec<Effect>,
    /// (record, durable when written).
    pub audit: Vec<(Entry, bool)>,
    /// Audit records cannot be written.
    pub fail_audit_write: bool,
    /// Audit records cannot be made durable.
    pub fail_commit: bool,
    /// Commits made, one flush each, and the answers they released.
    pub flushes: crate::protocol::AuditFlushes,
    /// The kernel maps.
    pub kernel: KernelState,
    /// Members of each grant's cgroup.
    pub cgroups: HashMap<GrantId, HashSet<i32>>,
    /// cgroup.kill fails (as when out of descriptors).
    pub fail_cgroup_kill: bool,
    /// Opening a process handle fails with EMFILE (out of descriptors).
    pub out_of_descriptors: bool,
    /// Processes kept alive by a FUSE connection (they are `unkillable`
    /// until it is aborted): pid -> connection.
    pub fuse_traps: HashMap<i32, u32>,
    /// Pids as a process in a pid namespace gives them: (viewer, local) ->
    /// global. A viewer not listed is in the initial namespace.
    pub local_pids: HashMap<(i32, i32), i32>,
    /// Secret files made so far (each gets the next inode number).
    pub files_made: u64,
    /// At the next move into a cgroup, the process moved has died and this
    /// one has taken its pid (a forced pid reuse).
    pub reuse_at_contain: Option<Proc>,
    elapsed: Duration,
    ns_reads: u64,
    timers: Vec<Timer>,
    watchers: Vec<Watcher>,
    next_task: u64,
}

impl World {
    /// The kernel clock: strictly increasing, so "before" and "after" are
    /// always told apart.
    fn now_ns(&mut self) -> u64 {
        self.ns_reads += 1;
        self.elapsed.as_nanos() as u64 + self.ns_reads
    }

    fn cancel(&mut self, id: u64) {
        self.timers.retain(|timer| timer.id != id);
        self.watchers.retain(|watcher| watcher.id != id);
    }

    /// Keeps an audit record, unless writes are made to fail.
    fn audit(&mut self, entry: &Entry, durable: bool) -> io::Result<()> {
        if self.fail_audit_write {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.audit.push((entry.clone(), durable));
        Ok(())
    }

    fn task_id(&mut self) -> u64 {
        self.next_task += 1;
        self.next_task
    }

    /// `pid` exits and `newcomer` is born with its pid.
    fn reuse_pid(&mut self, pid: i32, mut newcomer: Proc) {
        newcomer.birth = self.procs.get(&pid).map_or(0, |old| old.birth + 1);
        newcomer.tgid = pid;
        self.procs.insert(pid, newcomer);
    }

    /// Records a signal; SIGKILL marks the process for death.
    fn signal(&mut self, pid: i32, signal: i32) {
        self.effects.push(Effect::Signal {
            pid,
            signal,
            secrets_alive: secret_mem::live_on_this_thread(),
        });
        if signal == libc::SIGKILL
            && let Some(proc) = self.procs.get_mut(&pid)
            && proc.alive
        {
            proc.killed = true;
        }
    }

    /// Pids that were signalled with SIGKILL, in order.
    pub fn killed(&self) -> Vec<i32> {
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Signal {
                    pid,
                    signal: libc::SIGKILL,
                    ..
                } => Some(*pid),
                _ => None,
            })
            .collect()
    }

    /// The audit records' JSON, oldest first.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.audit
            .iter()
            .map(|(entry, _)| serde_json::to_value(entry).unwrap_or_default())
            .collect()
    }

    /// The records of `action`.
    pub fn records_of(&self, action: &str) -> Vec<serde_json::Value> {
        self.records()
            .into_iter()
            .filter(|record| record["action"] == action)
            .collect()
    }
}

/// The world, shared by the fake OS, its process handles and the test.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<World>>);

impl Shared {
    /// The world, locked.
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn task(&self, id: u64) -> Task {
        let world = self.clone();
        Task::new(move || world.lock().cancel(id))
    }
}

/// The pid `raw`, which the fake only ever makes positive.
fn pid(raw: i32) -> Pid {
    Pid::new(raw).unwrap_or_else(|| panic!("the fake made PID {raw}"))
}
