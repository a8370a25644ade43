//! A state machine on a fake world, fed what the real system would report.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use guardian_ebpf::{Event, EventKind};
use tokio::sync::oneshot;

use crate::{
    config::Config,
    daemon::state::{Core, Msg, Paths, Payload, Reply, RequestError, Setup, budget::Budget},
    os::{
        peer::Peer,
        process::Uid,
        secret_mem::{self, SecretBuf},
    },
    protocol::Request,
};

use super::{
    FakeCgroups, FakeKernel, FakeOs, FakeProcess, GUARDIAN, Proc, SUPERVISOR, Shared, pid,
};

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
            birth: 0,
            world: world.clone(),
        });
        let setup = Setup {
            kernel: match parts.kernel {
                true => Ok(FakeKernel(world.clone())),
                false => Err("eBPF switched off".to_owned()),
            },
            cgroups: parts.cgroups.then(|| FakeCgroups(world.clone())),
            budget: Budget::new(config.max_locked_bytes_per_uid),
            config,
            supervisor,
            max_grants: 16,
            paths: Paths {
                socket: "/run/test/guardian.sock".into(),
                audit_log: "/var/log/test/audit.jsonl".into(),
            },
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
            pid: super::pid(pid),
            uid: Uid(uid),
            gid: uid,
            exe: "/usr/bin/fake".to_owned(),
            comm: "fake".to_owned(),
            status: None,
            process: None,
        }
    }

    /// Sends one request from `pid` and returns the answer once committed.
    /// A payload over budget is refused as the server refuses it.
    pub fn ask(&mut self, pid: i32, request: Request, payload: Option<SecretBuf>) -> Reply {
        let peer = self.peer(pid);
        let payload = match self.charged(&peer, payload) {
            Ok(payload) => payload,
            Err(err) => return Reply::refused(&err),
        };
        let answer = self.hand_over(peer, request, payload);
        self.core.commit();
        self.core.disarm_if_idle();
        self.pump();
        answered(answer)
    }

    /// Sends requests (none with a payload) that arrive together, as the
    /// daemon takes whatever waits before one commit; their answers.
    pub fn ask_together(&mut self, requests: Vec<(i32, Request)>) -> Vec<Reply> {
        let answers: Vec<_> = requests
            .into_iter()
            .map(|(pid, request)| {
                let peer = self.peer(pid);
                self.hand_over(peer, request, None)
            })
            .collect();
        self.core.commit();
        self.pump();
        answers.into_iter().map(answered).collect()
    }

    /// Hands one request to the state machine as the server does; its
    /// answer comes at the next commit.
    fn hand_over(
        &mut self,
        peer: Peer,
        request: Request,
        payload: Option<Payload>,
    ) -> oneshot::Receiver<Reply> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Request {
            peer,
            request,
            payload,
            reply,
        };
        assert!(self.core.handle(msg));
        answer
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
        let payload = self.charged(&peer, payload)?;
        let result = self.core.carry_out(&peer, request, payload);
        self.core.commit();
        self.core.disarm_if_idle();
        self.pump();
        result
    }

    /// A put's bytes, charged to the sender as the server charges them.
    fn charged(
        &self,
        peer: &Peer,
        bytes: Option<SecretBuf>,
    ) -> Result<Option<Payload>, RequestError> {
        bytes
            .map(|bytes| {
                let charge = self.core.budget.charge(peer.uid, bytes.len())?;
                Ok(Payload { bytes, charge })
            })
            .transpose()
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
            if holder && !self.holder_event_lost() {
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
            && !self.holder_event_lost()
        {
            let mut fork = self.event(EventKind::HolderFork, child, parent);
            fork.grant = grant;
            self.events(vec![fork]);
        }
        child
    }

    /// True, and counted, when holder events are being lost.
    fn holder_event_lost(&self) -> bool {
        let mut world = self.world.lock();
        let kernel = &mut world.kernel;
        kernel.holder_dropped += u64::from(kernel.lose_holder_events);
        kernel.lose_holder_events
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

/// The answer a commit released.
fn answered(mut answer: oneshot::Receiver<Reply>) -> Reply {
    answer
        .try_recv()
        .unwrap_or_else(|_| panic!("not answered at commit"))
}
