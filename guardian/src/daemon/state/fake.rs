//! A fake world for the state machine: processes with the /proc facts the
//! rules read, signals that are recorded (with how many secrets were still
//! alive when each was sent), cgroups, kernel maps, timers on a clock the test
//! moves, and an audit log in memory that can be made to fail. [`Harness`]
//! owns a [`Core`] acting on it and delivers what the real OS would report:
//! exits, kernel events, timers. Used by the unit tests and, with the
//! `fuzzing` feature, by the fuzzer that drives the state machine.

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use guardian_ebpf::{Event, EventKind, HolderState};
use tokio::sync::oneshot;

use crate::{
    audit::{Entry, commit::Unsynced},
    config::Config,
    daemon::state::{
        Core, Msg, Reply, RequestError, Setup,
        os::{Containment, KernelMaps, Os, Process, Task},
        sessions::GrantId,
    },
    kernel::KernelError,
    os::{
        hardening::Protections,
        peer::Peer,
        process::{Pid, Status, Uid},
        secret_mem::{self, SecretBuf},
    },
    protocol::Request,
};

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
    /// A kernel thread.
    pub kernel_thread: bool,
    /// Not exited.
    pub alive: bool,
    /// Sent SIGKILL; dies at the next [`Harness::settle`] unless `unkillable`.
    pub killed: bool,
    /// Stays alive whatever it is sent (a process stuck in D state).
    pub unkillable: bool,
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
            kernel_thread: false,
            alive: true,
            killed: false,
            unkillable: false,
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
    /// Holders, with their grant and state.
    pub holders: HashMap<i32, (GrantId, HolderState)>,
    /// Events dropped so far.
    pub dropped: u64,
    /// Attaching the tamper programs fails.
    pub fail_arm: bool,
    /// The holders map is full.
    pub fail_set_holder: bool,
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
    /// The kernel maps.
    pub kernel: KernelState,
    /// Members of each grant's cgroup.
    pub cgroups: HashMap<GrantId, HashSet<i32>>,
    /// cgroup.kill fails (as when out of descriptors).
    pub fail_cgroup_kill: bool,
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

/// A handle on a fake process.
pub struct FakeProcess {
    pid: Pid,
    world: Shared,
}

impl Process for FakeProcess {
    fn pid(&self) -> Pid {
        self.pid
    }

    fn signal(&self, signal: i32) -> io::Result<()> {
        self.world.lock().signal(self.pid.raw(), signal);
        Ok(())
    }

    fn is_alive(&self) -> bool {
        self.world
            .lock()
            .procs
            .get(&self.pid.raw())
            .is_some_and(|proc| proc.alive)
    }
}

/// The fake kernel maps.
pub struct FakeKernel(Shared);

fn map_full() -> KernelError {
    KernelError::Missing("room in the map")
}

impl KernelMaps for FakeKernel {
    fn arm(&mut self) -> Result<(), KernelError> {
        let mut world = self.0.lock();
        if world.kernel.fail_arm {
            return Err(KernelError::Missing("tamper program"));
        }
        world.kernel.armed = true;
        Ok(())
    }

    fn disarm(&mut self) {
        self.0.lock().kernel.armed = false;
    }

    fn is_armed(&self) -> bool {
        self.0.lock().kernel.armed
    }

    fn watch_leader(&mut self, leader: Pid) -> Result<(), KernelError> {
        self.0.lock().kernel.leaders.insert(leader.raw());
        Ok(())
    }

    fn unwatch_leader(&mut self, leader: Pid) {
        self.0.lock().kernel.leaders.remove(&leader.raw());
    }

    fn set_holder(
        &mut self,
        pid: Pid,
        grant: GrantId,
        state: HolderState,
    ) -> Result<(), KernelError> {
        let mut world = self.0.lock();
        if world.kernel.fail_set_holder {
            return Err(map_full());
        }
        world.kernel.holders.insert(pid.raw(), (grant, state));
        Ok(())
    }

    fn remove_holder(&mut self, pid: Pid) {
        self.0.lock().kernel.holders.remove(&pid.raw());
    }

    fn dropped_events(&self) -> u64 {
        self.0.lock().kernel.dropped
    }

    fn lsm_error(&self) -> Option<&str> {
        Some("BPF LSM is not in this fake")
    }
}

/// The fake cgroups.
pub struct FakeCgroups(Shared);

impl Containment for FakeCgroups {
    fn add(&self, grant: GrantId, pid: Pid) -> io::Result<()> {
        self.0
            .lock()
            .cgroups
            .entry(grant)
            .or_default()
            .insert(pid.raw());
        Ok(())
    }

    fn kill(&self, grant: GrantId) -> io::Result<bool> {
        let mut world = self.0.lock();
        if world.fail_cgroup_kill {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let Some(members) = world.cgroups.get(&grant).cloned() else {
            return Ok(false);
        };
        let secrets_alive = secret_mem::live_on_this_thread();
        world.effects.push(Effect::CgroupKill {
            grant,
            secrets_alive,
        });
        for pid in members {
            if let Some(proc) = world.procs.get_mut(&pid)
                && proc.alive
            {
                proc.killed = true;
            }
        }
        Ok(true)
    }

    fn populated(&self, grant: GrantId) -> bool {
        let world = self.0.lock();
        world.cgroups.get(&grant).is_some_and(|members| {
            members
                .iter()
                .any(|pid| world.procs.get(pid).is_some_and(|p| p.alive))
        })
    }

    fn remove(&self, grant: GrantId) {
        let mut world = self.0.lock();
        let empty = world.cgroups.get(&grant).is_some_and(|members| {
            members
                .iter()
                .all(|pid| !world.procs.get(pid).is_some_and(|p| p.alive))
        });
        if empty {
            world.cgroups.remove(&grant);
        }
    }
}

/// The fake OS.
pub struct FakeOs {
    world: Shared,
    start: Instant,
}

impl FakeOs {
    fn proc(&self, pid: Pid) -> io::Result<Proc> {
        match self.world.lock().procs.get(&pid.raw()) {
            Some(proc) if proc.alive => Ok(proc.clone()),
            _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }
}

impl Os for FakeOs {
    type Process = FakeProcess;
    type Kernel = FakeKernel;
    type Containment = FakeCgroups;

    fn now(&self) -> Instant {
        self.start + self.world.lock().elapsed
    }

    fn now_ns(&self) -> u64 {
        self.world.lock().now_ns()
    }

    fn guardian(&self) -> Pid {
        pid(GUARDIAN)
    }

    fn open(&self, pid: Pid) -> io::Result<FakeProcess> {
        self.proc(pid)?;
        Ok(FakeProcess {
            pid,
            world: self.world.clone(),
        })
    }

    fn status(&self, pid: Pid) -> io::Result<Status> {
        let proc = self.proc(pid)?;
        Ok(Status {
            uid: proc.uid,
            gid: proc.uid.0,
            ppid: proc.ppid,
            tracer: proc.tracer,
            tgid: proc.tgid,
            name: "fake".to_owned(),
            kernel_thread: proc.kernel_thread,
        })
    }

    fn caller_status(&self, peer: &Peer) -> io::Result<Status> {
        self.status(peer.pid)
    }

    fn open_caller(&self, peer: &Peer) -> io::Result<FakeProcess> {
        self.open(peer.pid)
    }

    fn session_of(&self, pid: Pid) -> io::Result<Option<Pid>> {
        Ok(Pid::new(self.proc(pid)?.sid))
    }

    fn descends_from(&self, pid: Pid, ancestor: Pid) -> bool {
        let world = self.world.lock();
        let mut current = pid.raw();
        while current > 0 {
            if current == ancestor.raw() {
                return true;
            }
            current = world.procs.get(&current).map_or(0, |proc| proc.ppid);
        }
        false
    }

    fn descendants_of(&self, roots: &HashSet<Pid>) -> Vec<Pid> {
        let world = self.world.lock();
        let mut found = Vec::new();
        for (&pid, proc) in &world.procs {
            let pid = self::pid(pid);
            if proc.alive
                && !roots.contains(&pid)
                && roots.iter().any(|&root| {
                    let mut current = proc.ppid;
                    while current > 0 {
                        if current == root.raw() {
                            return true;
                        }
                        current = world.procs.get(&current).map_or(0, |p| p.ppid);
                    }
                    false
                })
            {
                found.push(pid);
            }
        }
        found
    }

    fn exe_of(&self, _pid: Pid) -> String {
        "/usr/bin/fake".to_owned()
    }

    fn on_exit(&self, process: Arc<FakeProcess>, msg: Msg) -> Task {
        let mut world = self.world.lock();
        let id = world.task_id();
        world.watchers.push(Watcher {
            id,
            pid: process.pid.raw(),
            msg: Some(msg),
        });
        drop(world);
        self.world.task(id)
    }

    fn after(&self, delay: Duration, msg: Msg) -> Task {
        let mut world = self.world.lock();
        let id = world.task_id();
        let due = world.elapsed + delay;
        world.timers.push(Timer {
            id,
            due,
            msg: Some(msg),
        });
        drop(world);
        self.world.task(id)
    }

    fn continue_if_stopped(&self, process: Arc<FakeProcess>) {
        self.world.lock().effects.push(Effect::ContinueIfStopped {
            pid: process.pid.raw(),
        });
    }

    fn audit_write(&mut self, entry: &Entry) -> io::Result<()> {
        self.world.lock().audit(entry, false)
    }

    fn audit_append(&mut self, entry: &Entry) -> io::Result<()> {
        self.world.lock().audit(entry, true)
    }

    fn audit_commit(&mut self, batch: Vec<Unsynced>) -> Result<(), (Vec<Unsynced>, io::Error)> {
        if self.world.lock().fail_commit {
            return Err((batch, io::Error::from_raw_os_error(libc::EIO)));
        }
        batch.into_iter().for_each(Unsynced::answer);
        Ok(())
    }

    fn hardening(&self) -> Protections {
        Protections::default()
    }
}

/// Which optional parts of the system the guardian has.
#[derive(Clone, Copy)]
pub struct Parts {
    /// The eBPF link.
    pub kernel: bool,
    /// cgroup v2 containment.
    pub cgroups: bool,
    /// The supervisor.
    pub supervisor: bool,
}

impl Parts {
    /// eBPF, cgroups and a supervisor, as on this project's machines.
    pub const ALL: Parts = Parts {
        kernel: true,
        cgroups: true,
        supervisor: true,
    };
    /// Neither eBPF nor cgroups: pidfds and /proc scans only.
    pub const NONE: Parts = Parts {
        kernel: false,
        cgroups: false,
        supervisor: false,
    };
}

/// A state machine on a fake world.
pub struct Harness {
    /// The state machine.
    pub core: Core<FakeOs>,
    /// Its world.
    pub world: Shared,
    parts: Parts,
    next_pid: i32,
}

impl Default for Harness {
    /// A guardian with everything, and the default policy.
    fn default() -> Self {
        Self::with(Parts::ALL, Config::default())
    }
}

impl Harness {
    /// A guardian with everything, and the default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// A guardian with `parts` and `config`.
    pub fn with(parts: Parts, config: Config) -> Self {
        let world = Shared::default();
        for pid in [GUARDIAN, SUPERVISOR] {
            world
                .lock()
                .procs
                .insert(pid, Proc::new(Uid::ROOT, 1, pid, pid));
        }
        let os = FakeOs {
            world: world.clone(),
            start: Instant::now(),
        };
        let supervisor = parts.supervisor.then(|| FakeProcess {
            pid: pid(SUPERVISOR),
            world: world.clone(),
        });
        let setup = Setup {
            kernel: match parts.kernel {
                true => Ok(FakeKernel(world.clone())),
                false => Err("eBPF switched off".to_owned()),
            },
            config,
            cgroups: parts.cgroups.then(|| FakeCgroups(world.clone())),
            supervisor,
            max_grants: 16,
        };
        Self {
            core: Core::new(os, setup),
            world,
            parts,
            next_pid: 1000,
        }
    }

    /// A new process of `uid` whose parent is `ppid` (0: none), in session
    /// `sid` (0: session 0; a negative value: a session of its own).
    pub fn spawn(&mut self, uid: u32, ppid: i32, sid: i32) -> i32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        let sid = if sid < 0 { pid } else { sid };
        self.world
            .lock()
            .procs
            .insert(pid, Proc::new(Uid(uid), ppid, sid, pid));
        pid
    }

    /// A session leader of `uid` (in a session of its own).
    pub fn leader(&mut self, uid: u32) -> i32 {
        self.spawn(uid, 1, -1)
    }

    /// A process inside `leader`'s session, its child.
    pub fn member(&mut self, leader: i32) -> i32 {
        let (uid, sid) = self.facts(leader);
        self.spawn(uid, leader, sid)
    }

    fn facts(&self, pid: i32) -> (u32, i32) {
        let world = self.world.lock();
        let proc = &world.procs[&pid];
        (proc.uid.0, proc.sid)
    }

    /// A connection from `pid`.
    pub fn peer(&self, pid: i32) -> Peer {
        let (uid, _) = self.facts(pid);
        Peer {
            pid: self::pid(pid),
            uid: Uid(uid),
            gid: uid,
            exe: "/usr/bin/fake".to_owned(),
            comm: "fake".to_owned(),
            status: None,
            process: None,
        }
    }

    /// Sends one request from `pid` and returns the answer once committed.
    pub fn ask(&mut self, pid: i32, request: Request, payload: Option<SecretBuf>) -> Reply {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Request {
            peer: self.peer(pid),
            request,
            payload,
            reply,
        };
        assert!(self.core.handle(msg));
        self.core.commit();
        self.core.disarm_if_idle();
        self.pump();
        let mut answer = answer;
        answer
            .try_recv()
            .unwrap_or_else(|_| panic!("not answered at commit"))
    }

    /// Carries out one request from `pid` without its audit record, for
    /// tests that look at the refusal itself.
    pub fn try_request(
        &mut self,
        pid: i32,
        request: Request,
        payload: Option<SecretBuf>,
    ) -> Result<Reply, RequestError> {
        let peer = self.peer(pid);
        let result = self.core.carry_out(&peer, request, payload);
        self.core.commit();
        self.core.disarm_if_idle();
        self.pump();
        result
    }

    /// Feeds the state machine a message, as the daemon's loop does.
    pub fn send(&mut self, msg: Msg) -> bool {
        let running = self.core.handle(msg);
        self.core.commit();
        self.core.disarm_if_idle();
        running
    }

    /// Feeds the state machine kernel events.
    pub fn events(&mut self, events: Vec<Event>) {
        self.core.kernel_events(events);
        self.core.disarm_if_idle();
    }

    /// Delivers the exit watchers of dead processes.
    pub fn pump(&mut self) {
        loop {
            let ready = {
                let mut world = self.world.lock();
                let dead: HashSet<i32> = world
                    .procs
                    .iter()
                    .filter(|(_, proc)| !proc.alive)
                    .map(|(&pid, _)| pid)
                    .collect();
                world
                    .watchers
                    .iter_mut()
                    .find(|watcher| dead.contains(&watcher.pid))
                    .and_then(|watcher| watcher.msg.take())
            };
            match ready {
                Some(msg) => _ = self.send(msg),
                None => return,
            }
        }
    }

    /// Ends `pid` as the kernel would report it: its exit watcher fires, and
    /// with eBPF the exit program reports a leader or holder in its maps.
    pub fn exit(&mut self, pid: i32) {
        let (leader, holder) = {
            let mut world = self.world.lock();
            if let Some(proc) = world.procs.get_mut(&pid) {
                proc.alive = false;
            }
            let holder = world.kernel.holders.remove(&pid).is_some();
            (world.kernel.leaders.contains(&pid), holder)
        };
        if self.parts.kernel {
            let mut events = Vec::new();
            if leader {
                events.push(self.event(EventKind::LeaderExit, pid, 0));
            }
            if holder {
                events.push(self.event(EventKind::HolderExit, pid, 0));
            }
            self.events(events);
        }
        self.pump();
    }

    /// Every killed process that can die, dies, and is reported.
    pub fn settle(&mut self) {
        let dying: Vec<i32> = self
            .world
            .lock()
            .procs
            .iter()
            .filter(|(_, proc)| proc.alive && proc.killed && !proc.unkillable)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in dying {
            self.exit(pid);
        }
    }

    /// A child of `parent`, born a holder as the kernel makes it one (same
    /// cgroup, same kernel-map entry, and a fork event).
    pub fn fork(&mut self, parent: i32) -> i32 {
        let (uid, sid) = self.facts(parent);
        let child = self.spawn(uid, parent, sid);
        let grant = {
            let mut world = self.world.lock();
            for members in world.cgroups.values_mut() {
                if members.contains(&parent) {
                    members.insert(child);
                }
            }
            let inherited = world.kernel.holders.get(&parent).copied();
            if let Some(entry) = inherited {
                world.kernel.holders.insert(child, entry);
            }
            inherited.map(|(grant, _)| grant)
        };
        if self.parts.kernel
            && let Some(grant) = grant
        {
            let mut fork = self.event(EventKind::HolderFork, child, parent);
            fork.grant = grant;
            self.events(vec![fork]);
        }
        child
    }

    /// Moves the clock on by `by`, firing the timers that fall due, in order.
    pub fn advance(&mut self, by: Duration) {
        let until = self.world.lock().elapsed + by;
        loop {
            let due = {
                let mut world = self.world.lock();
                world.timers.sort_by_key(|timer| timer.due);
                match world.timers.first() {
                    Some(timer) if timer.due <= until => {
                        let timer = world.timers.remove(0);
                        world.elapsed = world.elapsed.max(timer.due);
                        timer.msg
                    }
                    _ => {
                        world.elapsed = until;
                        None
                    }
                }
            };
            match due {
                Some(msg) => _ = self.send(msg),
                None => return,
            }
        }
    }

    /// A kernel event of `kind` about `pid`, stamped now.
    pub fn event(&self, kind: EventKind, pid: i32, other: i32) -> Event {
        Event {
            ktime_ns: self.world.lock().now_ns(),
            ..event(kind, pid, other)
        }
    }

    /// Every stored secret: owner, name and bytes (a copy, for checking).
    pub fn vault_contents(&self) -> Vec<(Uid, String, Vec<u8>)> {
        self.core
            .vault
            .keys()
            .into_iter()
            .filter_map(|key| {
                let secret = self.core.vault.get(&key)?;
                Some((
                    key.owner,
                    key.name.to_string(),
                    secret.bytes.as_slice().to_vec(),
                ))
            })
            .collect()
    }

    /// Timers still pending.
    pub fn pending_timers(&self) -> usize {
        self.world.lock().timers.len()
    }
}

/// The pid `raw`, which the fake only ever makes positive.
fn pid(raw: i32) -> Pid {
    Pid::new(raw).unwrap_or_else(|| panic!("the fake made PID {raw}"))
}

/// A kernel event of `kind` about `pid`, at the start of time.
pub fn event(kind: EventKind, pid: i32, other: i32) -> Event {
    Event {
        kind: kind as u32,
        pid: pid as u32,
        other: other as u32,
        ktime_ns: 1,
        ..Event::EMPTY
    }
}

/// Secret buffers alive on this test's thread.
pub fn live_secrets() -> usize {
    secret_mem::live_on_this_thread()
}
