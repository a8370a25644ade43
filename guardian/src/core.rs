//! The guardian's core: one task owns every secret, session and kernel map, and
//! handles, in order, requests from connections, events from the kernel, and
//! reports from the pidfd watchers and TTL timers. Owning the state in one place
//! means a trigger and a request can never interleave halfway.
//!
//! Enforcement is always "wipe, then kill": secrets are zeroized before any
//! holder is signalled, so nothing a dying holder does can delay the wipe.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use guardian_ebpf::{Event, EventKind, HolderState, TamperSyscall};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, oneshot},
    task::AbortHandle,
};

use crate::{
    audit::{AuditLog, Entry, Latency, Outcome},
    cgroup::Cgroups,
    clock,
    config::{Config, TamperResponse},
    hardening::{self, Protections},
    kernel::KernelLink,
    peer::Peer,
    process::{self, Pid, Pidfd, Status, Uid},
    protocol::{Request, Response, SecretInfo, SecretName, StatusInfo},
    secret_mem::{self, SecretBuf},
    sessions::{Grant, GrantId, Holder, Leader, Sessions},
    vault::{Secret, SecretKey, Vault},
};

/// How long a trigger waits for holders to die before recording that some survived.
const HOLDER_DEATH_WAIT: Duration = Duration::from_secs(5);
/// How often a pending trigger re-signals its surviving holders.
const RECHECK: Duration = Duration::from_millis(100);

/// What the core is told.
pub enum Msg {
    /// A parsed request from a connection.
    Request {
        /// Who sent it.
        peer: Peer,
        /// What it asks.
        request: Request,
        /// The secret bytes of a `put`.
        payload: Option<SecretBuf>,
        /// Where the answer goes.
        reply: oneshot::Sender<Reply>,
    },
    /// A connection sent something that is not a request (audited, then closed).
    Malformed {
        /// Who sent it, if known.
        peer: Option<Peer>,
        /// What was wrong.
        reason: String,
    },
    /// A leader's pidfd reported its exit.
    LeaderGone {
        /// The leader.
        pid: Pid,
        /// Which binding of that pid.
        id: u64,
    },
    /// A holder's pidfd reported its exit.
    HolderGone {
        /// The holder.
        pid: Pid,
    },
    /// The supervisor died: nothing would kill the holders if the guardian
    /// died now, so everything is wiped (fail closed).
    SupervisorGone,
    /// A secret's TTL ran out.
    Expired {
        /// The secret.
        key: SecretKey,
        /// Which secret under that key.
        id: u64,
    },
    /// Re-check of triggers still waiting for holders to die (scheduled only
    /// while some are, so an idle guardian never wakes).
    Tick,
    /// Wipe everything and stop.
    Shutdown,
    /// The syncer could not make a batch's records durable.
    SyncFailed {
        /// The batch, unanswered.
        batch: Vec<Unsynced>,
        /// Why.
        error: std::io::Error,
    },
}

/// The answer to a request: a response header and the secrets that follow it.
pub struct Reply {
    /// The header.
    pub response: Response,
    /// Copies of secrets in locked memory, written after the header and wiped.
    pub secrets: Vec<SecretBuf>,
}

impl Reply {
    fn error(message: impl Into<String>) -> Self {
        Self {
            response: Response::Error {
                message: message.into(),
            },
            secrets: Vec::new(),
        }
    }

    fn plain(response: Response) -> Self {
        Self {
            response,
            secrets: Vec::new(),
        }
    }
}

/// An answer waiting for its audit record to reach the disk.
pub struct Unsynced {
    reply_to: oneshot::Sender<Reply>,
    answer: Reply,
    refusal: Option<Refusal>,
}

impl Unsynced {
    /// Sends the answer (its record is durable now).
    pub fn answer(self) {
        // The client may have gone; its record is written either way.
        let _ = self.reply_to.send(self.answer);
    }
}

/// Answers to send once `file` is synced.
pub struct SyncJob {
    /// The audit file their records were written to.
    pub file: Arc<std::fs::File>,
    /// The answers.
    pub batch: Vec<Unsynced>,
}

/// How to refuse a put/get/exec whose record could not be made durable.
pub struct Refusal {
    action: &'static str,
    /// A stored secret to wipe again.
    undo: Option<SecretKey>,
}

/// Why secrets were wiped.
#[derive(Clone, Copy, Debug)]
enum Cause {
    LeaderExit,
    LeaderHangup,
    Revoke,
    TtlExpired,
    Shutdown,
    KernelEventsLost,
    Tamper,
    WipeAll,
    SupervisorLost,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::LeaderExit => "leader_exit",
            Cause::LeaderHangup => "leader_hangup",
            Cause::Revoke => "revoke",
            Cause::TtlExpired => "ttl_expired",
            Cause::Shutdown => "shutdown",
            Cause::KernelEventsLost => "kernel_events_lost",
            Cause::Tamper => "tamper",
            Cause::WipeAll => "wipe_all",
            Cause::SupervisorLost => "supervisor_lost",
        }
    }
}

/// A trigger whose secrets are wiped and whose holders are being killed.
struct PendingTrigger {
    cause: Cause,
    names: Vec<String>,
    leader: Option<Pid>,
    start_ns: u64,
    wiped_ns: u64,
    grants: HashSet<GrantId>,
    killed: usize,
    last_dead_ns: u64,
    deadline: Instant,
}

/// What the daemon set up before the core starts.
pub struct Setup {
    /// The eBPF link, or why there is none.
    pub kernel: Result<KernelLink, String>,
    /// The self-protection in force.
    pub protections: Protections,
    /// Policy.
    pub config: Config,
    /// Per-exec cgroups, where cgroup v2 is available.
    pub cgroups: Option<Cgroups>,
    /// The supervisor that kills holders if the guardian dies.
    pub supervisor: Option<Pidfd>,
    /// The audit log.
    pub audit: AuditLog,
    /// The thread that makes batches durable and answers them (`daemon::start_syncer`).
    pub syncer: std::sync::mpsc::Sender<SyncJob>,
}

/// The guardian's whole state.
pub struct Core {
    vault: Vault,
    sessions: Sessions,
    triggers: Vec<PendingTrigger>,
    kernel: Option<KernelLink>,
    kernel_error: Option<String>,
    dropped_seen: u64,
    protections: Protections,
    config: Config,
    cgroups: Option<Cgroups>,
    supervisor: Option<Arc<Pidfd>>,
    audit: AuditLog,
    next_id: u64,
    next_grant: GrantId,
    tick_scheduled: bool,
    unsynced: Vec<Unsynced>,
    syncer: std::sync::mpsc::Sender<SyncJob>,
    to_self: mpsc::UnboundedSender<Msg>,
}

impl Core {
    /// A core with no secrets.
    pub fn new(setup: Setup, to_self: mpsc::UnboundedSender<Msg>) -> Self {
        let (kernel, kernel_error) = match setup.kernel {
            Ok(link) => (Some(link), None),
            Err(err) => (None, Some(err)),
        };
        let mut core = Self {
            vault: Vault::default(),
            sessions: Sessions::default(),
            triggers: Vec::new(),
            kernel,
            kernel_error,
            dropped_seen: 0,
            protections: setup.protections,
            config: setup.config,
            cgroups: setup.cgroups,
            supervisor: None,
            audit: setup.audit,
            next_id: 1,
            next_grant: 0,
            tick_scheduled: false,
            unsynced: Vec::new(),
            syncer: setup.syncer,
            to_self,
        };
        if let Some(supervisor) = setup.supervisor {
            let supervisor = Arc::new(supervisor);
            core.on_exit(Arc::clone(&supervisor), Msg::SupervisorGone);
            core.supervisor = Some(supervisor);
        }
        core
    }

    /// Handles one message; returns false once the guardian should stop.
    pub fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Request {
                peer,
                request,
                payload,
                reply,
            } => {
                let (answer, refusal) = self.request(&peer, request, payload);
                // Answered at the next commit, once its record is on disk.
                self.unsynced.push(Unsynced {
                    reply_to: reply,
                    answer,
                    refusal,
                });
            }
            Msg::Malformed { peer, reason } => self.record(Entry {
                action: "malformed".to_owned(),
                names: Vec::new(),
                peer,
                leader: None,
                outcome: Outcome::Deny,
                reason: Some(reason),
                latency: None,
            }),
            Msg::LeaderGone { pid, id } => {
                if self
                    .sessions
                    .leaders
                    .get(&pid)
                    .is_some_and(|leader| leader.id == id)
                {
                    self.leader_gone(pid, Cause::LeaderExit, clock::now_ns());
                }
            }
            Msg::HolderGone { pid } => self.holder_exited(pid, clock::now_ns()),
            Msg::Expired { key, id } => {
                if self.vault.get(&key).is_some_and(|secret| secret.id == id) {
                    self.trigger(Cause::TtlExpired, clock::now_ns(), vec![key], None);
                }
            }
            Msg::SupervisorGone => {
                tracing::error!("the supervisor died; wiping every secret");
                self.supervisor = None;
                self.trigger(
                    Cause::SupervisorLost,
                    clock::now_ns(),
                    self.vault.keys(),
                    None,
                );
            }
            Msg::SyncFailed { batch, error } => self.sync_failed(batch, &error),
            Msg::Tick => {
                self.tick_scheduled = false;
                self.check_triggers();
            }
            Msg::Shutdown => {
                self.trigger(Cause::Shutdown, clock::now_ns(), self.vault.keys(), None);
                return false;
            }
        }
        true
    }

    /// Detaches the tamper tracepoints once no secret is held and no holder
    /// lives; `put` attaches them again before it stores anything.
    pub fn disarm_if_idle(&mut self) {
        if self.vault.is_empty()
            && self.sessions.holders.is_empty()
            && let Some(kernel) = &mut self.kernel
            && kernel.is_armed()
        {
            kernel.disarm();
        }
    }

    /// Handles one batch of kernel events, then fails closed if any were lost.
    pub fn kernel_events(&mut self, events: Vec<Event>) {
        for event in events {
            let Some(pid) = Pid::new(event.pid as i32) else {
                continue;
            };
            match event.kind() {
                Some(EventKind::LeaderExit) => {
                    self.leader_gone(pid, Cause::LeaderExit, event.ktime_ns)
                }
                Some(EventKind::LeaderHangup) => {
                    self.leader_gone(pid, Cause::LeaderHangup, event.ktime_ns)
                }
                Some(EventKind::HolderFork) => self.holder_forked(pid, event.grant),
                Some(EventKind::HolderExit) => self.holder_exited(pid, event.ktime_ns),
                Some(EventKind::Tamper) => self.tamper(&event),
                None => tracing::warn!(kind = event.kind, "unknown kernel event"),
            }
        }
        let dropped = self.kernel.as_ref().map_or(0, KernelLink::dropped_events);
        if dropped > self.dropped_seen {
            tracing::error!(dropped, "kernel events were lost; wiping every secret");
            self.dropped_seen = dropped;
            self.trigger(
                Cause::KernelEventsLost,
                clock::now_ns(),
                self.vault.keys(),
                None,
            );
        }
    }

    /// True while triggers are still waiting for holders to die.
    pub fn is_settling(&self) -> bool {
        !self.triggers.is_empty()
    }

    fn request(
        &mut self,
        peer: &Peer,
        request: Request,
        payload: Option<SecretBuf>,
    ) -> (Reply, Option<Refusal>) {
        let action = request.action();
        let names = request_names(&request);
        let leader = names.first().and_then(|name| self.leader_of(peer, name));
        let result = match request {
            Request::Put {
                name,
                bind,
                ttl_secs,
                ..
            } => match payload {
                Some(bytes) => self.put(peer, name, bind, ttl_secs, bytes),
                None => Err("put without secret bytes".to_owned()),
            },
            Request::Get { name } => self.get(peer, &name),
            Request::Exec { names } => self.exec(peer, &names),
            Request::List {} => Ok(self.list(peer)),
            Request::Revoke { name } => self.revoke(peer, name),
            Request::WipeAll {} => Ok(self.wipe_all(peer)),
            Request::Status {} => Ok(Reply::plain(Response::Status(Box::new(self.status())))),
        };
        let (outcome, reason, leader) = match &result {
            Ok(reply) => match reply.response {
                Response::Stored { leader } => (Outcome::Allow, None, Some(leader)),
                _ => (Outcome::Allow, None, leader),
            },
            Err(message) => (Outcome::Deny, Some(message.clone()), leader),
        };
        let entry = Entry {
            action: action.to_owned(),
            names: names.iter().map(ToString::to_string).collect(),
            peer: Some(peer.clone()),
            leader,
            outcome,
            reason,
            latency: None,
        };
        // Nothing enters or leaves the vault that the log does not show, so
        // put/get/exec carry what undoes them if the record cannot be written;
        // revoke, wipe, list and status still answer (they only destroy or describe).
        let stored = (action == "put" && result.is_ok())
            .then(|| names.first())
            .flatten();
        let refusal = matches!(action, "put" | "get" | "exec").then(|| Refusal {
            action,
            undo: stored.map(|name| SecretKey {
                owner: peer.uid,
                name: name.clone(),
            }),
        });
        let answer = result.unwrap_or_else(Reply::error);
        match (self.audit.write(&entry), refusal) {
            (Err(err), Some(refusal)) => (self.refuse(refusal, &err), None),
            (Err(err), None) => {
                tracing::error!(%err, action, "cannot write the audit log");
                (answer, None)
            }
            (Ok(()), refusal) => (answer, refusal),
        }
    }

    /// Hands the answers waiting since the last commit to the syncer thread,
    /// which sends them after one fdatasync covering their records (group
    /// commit, overlapped with the next batch); none is answered before its
    /// record is on disk. The syncer hands a batch back on failure.
    pub fn commit(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let job = SyncJob {
            file: self.audit.current_file(),
            batch: std::mem::take(&mut self.unsynced),
        };
        if let Err(std::sync::mpsc::SendError(job)) = self.syncer.send(job) {
            let err = std::io::Error::other("the audit syncer stopped");
            self.sync_failed(job.batch, &err);
        }
    }

    /// Answers a batch whose records could not be made durable: put/get/exec
    /// are refused (puts undone), the rest answered as they were.
    fn sync_failed(&mut self, batch: Vec<Unsynced>, err: &std::io::Error) {
        for unsynced in batch {
            let answer = match unsynced.refusal {
                Some(refusal) => self.refuse(refusal, err),
                None => unsynced.answer,
            };
            let _ = unsynced.reply_to.send(answer);
        }
    }

    /// Undoes what a request did when its record cannot reach the disk.
    fn refuse(&mut self, refusal: Refusal, err: &std::io::Error) -> Reply {
        tracing::error!(%err, "cannot write the audit log");
        if let Some(key) = refusal.undo {
            self.vault.wipe(&key);
        }
        Reply::error(format!(
            "audit log unavailable ({err}); {} refused",
            refusal.action
        ))
    }

    /// The leader of the caller's secret `name`, for the audit record.
    fn leader_of(&self, peer: &Peer, name: &SecretName) -> Option<i32> {
        let key = SecretKey {
            owner: peer.uid,
            name: name.clone(),
        };
        self.vault.get(&key).map(|secret| secret.leader.raw())
    }

    fn put(
        &mut self,
        peer: &Peer,
        name: SecretName,
        bind: Option<i32>,
        ttl_secs: Option<u64>,
        bytes: SecretBuf,
    ) -> Result<Reply, String> {
        let key = SecretKey {
            owner: peer.uid,
            name,
        };
        if self.vault.get(&key).is_some() {
            return Err(format!(
                "secret {} already exists (revoke it first)",
                key.name
            ));
        }
        if bytes.len() > self.config.max_secret_bytes {
            return Err(format!(
                "secret is larger than the limit of {} bytes",
                self.config.max_secret_bytes
            ));
        }
        if self.vault.owned_by(peer.uid).count() >= self.config.max_secrets_per_uid {
            return Err(format!(
                "this user already holds the maximum of {} secrets",
                self.config.max_secrets_per_uid
            ));
        }
        let ttl = self.config.ttl_for(ttl_secs.map(Duration::from_secs))?;
        // Armed before the secret is stored: no secret is ever held unguarded.
        if let Some(kernel) = &mut self.kernel {
            kernel
                .arm()
                .map_err(|err| format!("cannot arm tamper protection: {err}"))?;
        }
        let leader = match bind {
            Some(raw) => Pid::new(raw).ok_or_else(|| format!("invalid PID {raw}"))?,
            None => process::session_of(peer.pid)
                .map_err(|err| format!("cannot find the caller's session: {err}"))?
                .ok_or("the caller is in no login session (session 0); bind with --bind PID")?,
        };
        self.check_bindable(peer, leader)?;
        self.watch_leader(leader)?;
        let id = self.fresh_id();
        let expiry = ttl.map(|ttl| {
            (
                Instant::now() + ttl,
                self.expire_after(ttl, key.clone(), id),
            )
        });
        let secret = Secret {
            id,
            bytes,
            leader,
            created: Instant::now(),
            expiry,
        };
        self.vault.insert(key, secret);
        Ok(Reply::plain(Response::Stored {
            leader: leader.raw(),
        }))
    }

    fn check_bindable(&self, peer: &Peer, leader: Pid) -> Result<(), String> {
        if leader.raw() == 1 {
            return Err("refusing to bind to PID 1: it never exits".to_owned());
        }
        if leader == Pid::current() {
            return Err("refusing to bind to the guardian itself".to_owned());
        }
        // Open the pidfd first: checks made after it are about this very process.
        let pidfd = Pidfd::open(leader).map_err(|err| inspect_error(leader, &err))?;
        let status = Status::read(leader).map_err(|err| inspect_error(leader, &err))?;
        if status.tgid != leader.raw() {
            return Err(format!("PID {leader} is a thread, not a process"));
        }
        if status.kernel_thread {
            return Err(format!("refusing to bind to PID {leader}: a kernel thread"));
        }
        if peer.uid != Uid::ROOT && status.uid != peer.uid {
            return Err(format!("PID {leader} belongs to another user"));
        }
        if !pidfd.is_alive() {
            return Err(format!("process {leader} has exited"));
        }
        Ok(())
    }

    fn watch_leader(&mut self, leader: Pid) -> Result<(), String> {
        if self.sessions.leaders.contains_key(&leader) {
            return Ok(());
        }
        let sid = process::session_of(leader).map_err(|err| inspect_error(leader, &err))?;
        let pidfd = Pidfd::open(leader).map_err(|err| inspect_error(leader, &err))?;
        if let Some(kernel) = &mut self.kernel {
            kernel
                .watch_leader(leader)
                .map_err(|err| format!("cannot watch {leader}: {err}"))?;
        }
        let id = self.fresh_id();
        let watcher = self.on_exit(Arc::new(pidfd), Msg::LeaderGone { pid: leader, id });
        self.sessions
            .leaders
            .insert(leader, Leader { id, sid, watcher });
        Ok(())
    }

    /// Finds a secret the peer may use: its own, and from inside the bound
    /// session (`peer_sid` is the caller's session). [`untraced`] is checked
    /// once per request beside it.
    fn usable(
        &self,
        peer: &Peer,
        peer_sid: Option<Pid>,
        name: &SecretName,
    ) -> Result<SecretKey, String> {
        let key = SecretKey {
            owner: peer.uid,
            name: name.clone(),
        };
        let secret = self
            .vault
            .get(&key)
            .ok_or_else(|| format!("no such secret: {name}"))?;
        let leader = secret.leader;
        let inside = self.sessions.leaders.get(&leader).is_some_and(|l| {
            l.shares_session(peer_sid) || process::descends_from(peer.pid, leader)
        });
        if !inside {
            return Err(format!(
                "{name} is bound to the session of PID {leader}; this process is outside it"
            ));
        }
        Ok(key)
    }

    /// The secrets of `names` that the peer may use, after checking once that
    /// the peer is not being traced.
    fn usable_all(&self, peer: &Peer, names: &[SecretName]) -> Result<Vec<SecretKey>, String> {
        let peer_sid = process::session_of(peer.pid).ok().flatten();
        let keys = names
            .iter()
            .map(|name| self.usable(peer, peer_sid, name))
            .collect::<Result<Vec<_>, _>>()?;
        untraced(peer)?;
        Ok(keys)
    }

    fn copies(&self, keys: &[SecretKey]) -> Result<Vec<SecretBuf>, String> {
        keys.iter()
            .map(|key| {
                let secret = self.vault.get(key).ok_or("secret vanished")?;
                secret.bytes.try_clone().map_err(|err| err.to_string())
            })
            .collect()
    }

    fn get(&mut self, peer: &Peer, name: &SecretName) -> Result<Reply, String> {
        let keys = self.usable_all(peer, std::slice::from_ref(name))?;
        let secrets = self.copies(&keys)?;
        let lens = secrets.iter().map(SecretBuf::len).collect();
        Ok(Reply {
            response: Response::Secrets { lens },
            secrets,
        })
    }

    fn exec(&mut self, peer: &Peer, names: &[SecretName]) -> Result<Reply, String> {
        let keys = self.usable_all(peer, names)?;
        let secrets = self.copies(&keys)?;
        self.add_holder(peer.pid, keys)?;
        let lens = secrets.iter().map(SecretBuf::len).collect();
        Ok(Reply {
            response: Response::Secrets { lens },
            secrets,
        })
    }

    /// Makes `pid` a holder of `keys`: tracked by pidfd and, with eBPF, in the
    /// kernel map so that its children become holders as they are born.
    fn add_holder(&mut self, pid: Pid, keys: Vec<SecretKey>) -> Result<(), String> {
        if let Some(holder) = self.sessions.holders.get(&pid) {
            let grant = self.sessions.grants.entry(holder.grant).or_default();
            grant.secrets.extend(keys);
            return Ok(());
        }
        let pidfd = Pidfd::open(pid).map_err(|_| "the caller has exited".to_owned())?;
        let grant = self.fresh_grant();
        if let Some(cgroups) = &self.cgroups {
            // The caller waits for this reply, so it has forked nothing yet:
            // from here on every descendant is born inside the grant's cgroup.
            cgroups
                .add(grant, pid)
                .map_err(|err| format!("cannot contain the command in a cgroup: {err}"))?;
        }
        if let Some(kernel) = &mut self.kernel {
            // Its exit is reported once it is in the map; one before would not be.
            let reported = match kernel.set_holder(pid, grant, HolderState::Holding) {
                Err(err) => Err(err.to_string()),
                Ok(()) if !pidfd.is_alive() => {
                    kernel.remove_holder(pid);
                    Err("the caller has exited".to_owned())
                }
                Ok(()) => Ok(()),
            };
            if let Err(err) = reported {
                if let Some(cgroups) = &self.cgroups {
                    cgroups.remove(grant); // best effort; shutdown removes the rest
                }
                return Err(err);
            }
        }
        self.sessions.grants.insert(
            grant,
            Grant {
                secrets: keys.into_iter().collect(),
                doomed: false,
            },
        );
        self.track_holder(pid, grant, pidfd);
        Ok(())
    }

    /// Records a holder. With eBPF the kernel reports its exit; a pidfd
    /// watcher as well would wake the guardian twice per exit, and a
    /// teardown of a hundred holders needs that CPU.
    fn track_holder(&mut self, pid: Pid, grant: GrantId, pidfd: Pidfd) {
        let pidfd = Arc::new(pidfd);
        let watcher = self
            .kernel
            .is_none()
            .then(|| self.on_exit(Arc::clone(&pidfd), Msg::HolderGone { pid }));
        self.sessions.holders.insert(
            pid,
            Holder {
                grant,
                pidfd,
                watcher,
            },
        );
    }

    fn list(&self, peer: &Peer) -> Reply {
        let mut secrets: Vec<SecretInfo> = self
            .vault
            .owned_by(peer.uid)
            .map(|(key, secret)| SecretInfo {
                name: key.name.to_string(),
                leader: secret.leader.raw(),
                holders: self.sessions.holders_of(key),
                age_secs: secret.created.elapsed().as_secs(),
                ttl_left_secs: secret.ttl_left().map(|left| left.as_secs()),
            })
            .collect();
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Reply::plain(Response::List { secrets })
    }

    fn revoke(&mut self, peer: &Peer, name: SecretName) -> Result<Reply, String> {
        let key = SecretKey {
            owner: peer.uid,
            name,
        };
        if self.vault.get(&key).is_none() {
            return Err(format!("no such secret: {}", key.name));
        }
        let killed = self.trigger(Cause::Revoke, clock::now_ns(), vec![key], None);
        Ok(Reply::plain(Response::Revoked {
            holders_killed: killed,
        }))
    }

    fn wipe_all(&mut self, peer: &Peer) -> Reply {
        let keys: Vec<SecretKey> = match peer.uid {
            Uid::ROOT => self.vault.keys(),
            uid => self
                .vault
                .owned_by(uid)
                .map(|(key, _)| key.clone())
                .collect(),
        };
        let secrets = keys.len();
        let holders_killed = self.trigger(Cause::WipeAll, clock::now_ns(), keys, None);
        Reply::plain(Response::Wiped {
            secrets,
            holders_killed,
        })
    }

    /// A process was SIGKILLed in the kernel for ptracing or reading a holder or
    /// the guardian. Audit it; if the target is a holder, wipe what it holds
    /// (unless the policy says audit only).
    fn tamper(&mut self, event: &Event) {
        let (Some(attacker), Some(target)) =
            (Pid::new(event.pid as i32), Pid::new(event.other as i32))
        else {
            return;
        };
        let grant = self
            .sessions
            .holders
            .get(&target)
            .map(|holder| holder.grant);
        let keys: Vec<SecretKey> = grant
            .and_then(|grant| self.sessions.grants.get(&grant))
            .map(|grant| grant.secrets.iter().cloned().collect())
            .unwrap_or_default();
        let syscall = TamperSyscall::name(event.syscall);
        let role = match grant {
            Some(_) => "holder",
            None if self.supervisor.as_ref().is_some_and(|s| s.pid() == target) => "supervisor",
            None if target == Pid::current() => "guardian",
            None => "holder",
        };
        tracing::warn!(%attacker, %target, syscall, "tamper attempt stopped");
        self.record(Entry {
            action: "tamper".to_owned(),
            names: keys.iter().map(|key| key.name.to_string()).collect(),
            peer: Some(Peer {
                pid: attacker,
                uid: Uid(event.uid),
                gid: event.gid,
                exe: process::exe_of(attacker),
                comm: event.comm_str().to_owned(),
                status: None,
            }),
            leader: None,
            outcome: Outcome::Deny,
            reason: Some(format!(
                "{syscall} (request {}) on {role} {target}; caller SIGKILLed",
                event.request
            )),
            latency: None,
        });
        if role == "supervisor"
            && let Some(supervisor) = &self.supervisor
        {
            continue_if_stopped(Arc::clone(supervisor));
        }
        if !keys.is_empty() && self.config.tamper_response == TamperResponse::Wipe {
            self.trigger(Cause::Tamper, event.ktime_ns, keys, None);
        }
    }

    fn status(&self) -> StatusInfo {
        let ebpf = self.kernel.is_some();
        StatusInfo {
            pid: Pid::current().raw(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            watch_mode: if ebpf {
                "ebpf-tracepoints"
            } else {
                "pidfd-fallback"
            }
            .to_owned(),
            ebpf_error: self.kernel_error.clone(),
            fork_tracking: if ebpf { "ebpf" } else { "proc-scan" }.to_owned(),
            containment: if self.cgroups.is_some() {
                "cgroup"
            } else {
                "pidfd"
            }
            .to_owned(),
            fail_closed: if self.supervisor.is_some() {
                "supervisor"
            } else {
                "none"
            }
            .to_owned(),
            tamper_protection: match &self.kernel {
                Some(link) if link.lsm_error().is_none() => "bpf-lsm+tracepoints",
                Some(_) => "ebpf-tracepoints",
                None => "none",
            }
            .to_owned(),
            lsm_error: self
                .kernel
                .as_ref()
                .and_then(|link| link.lsm_error().map(str::to_owned)),
            tamper_armed: self.kernel.as_ref().is_some_and(KernelLink::is_armed),
            memory_backend: match secret_mem::backing() {
                secret_mem::Backing::MemfdSecret => "memfd_secret",
                secret_mem::Backing::Mlock => "mlock",
            }
            .to_owned(),
            locked_bytes: secret_mem::locked_bytes(),
            secrets: self.vault.len(),
            leaders: self.sessions.leaders.len(),
            holders: self.sessions.holders.len(),
            dropped_events: self.dropped_seen,
            hardening: hardening::current(&self.protections),
        }
    }

    fn leader_gone(&mut self, leader: Pid, cause: Cause, start_ns: u64) {
        if !self.sessions.leaders.contains_key(&leader) {
            return;
        }
        let keys = self.vault.bound_to(leader);
        self.trigger(cause, start_ns, keys, Some(leader));
        // A hangup leaves the leader alive; it is no longer watched either way.
        self.unwatch_leader(leader);
    }

    fn unwatch_leader(&mut self, leader: Pid) {
        if let Some(entry) = self.sessions.leaders.remove(&leader) {
            entry.watcher.abort();
        }
        if let Some(kernel) = &mut self.kernel {
            kernel.unwatch_leader(leader);
        }
    }

    /// Wipes `keys`, then kills every holder of any of them. Returns the number
    /// of holders signalled.
    fn trigger(
        &mut self,
        cause: Cause,
        start_ns: u64,
        keys: Vec<SecretKey>,
        leader: Option<Pid>,
    ) -> usize {
        let mut names = Vec::new();
        let mut leaders = HashSet::new();
        for key in &keys {
            if let Some(secret) = self.vault.get(key) {
                leaders.insert(secret.leader);
            }
            if self.vault.wipe(key) {
                names.push(key.name.to_string());
            }
        }
        let wiped_ns = clock::now_ns();
        let keys: HashSet<SecretKey> = keys.into_iter().collect();
        let grants = self.sessions.doom_grants_of(&keys);
        if names.is_empty() && grants.is_empty() {
            return 0; // nothing was held: nothing to wipe, kill or record
        }
        let killed = self.kill_grants(&grants);
        for leader in leaders {
            if !self.vault.has_leader(leader) {
                self.unwatch_leader(leader);
            }
        }
        tracing::info!(cause = cause.as_str(), ?names, killed, "secrets wiped");
        self.triggers.push(PendingTrigger {
            cause,
            names,
            leader,
            start_ns,
            wiped_ns,
            grants,
            killed,
            last_dead_ns: 0,
            deadline: Instant::now() + HOLDER_DEATH_WAIT,
        });
        self.check_triggers();
        killed
    }

    /// SIGKILLs every holder in `grants`. Without eBPF fork tracking, holders'
    /// descendants are found by a scan of /proc and killed too.
    fn kill_grants(&mut self, grants: &HashSet<GrantId>) -> usize {
        if grants.is_empty() {
            return 0;
        }
        let holders = self.sessions.holders_in(grants);
        // Kill first: the dying processes need the CPU more than the map does.
        let mut contained = HashSet::new();
        if let Some(cgroups) = &self.cgroups {
            for &grant in grants {
                match cgroups.kill(grant) {
                    Ok(true) => _ = contained.insert(grant),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(grant, %err, "cgroup.kill failed; killing holders one by one")
                    }
                }
            }
        }
        for (pid, _, pidfd) in &holders {
            if let Err(err) = pidfd.kill() {
                tracing::warn!(%pid, %err, "cannot kill holder");
            }
        }
        if let Some(kernel) = &mut self.kernel {
            // cgroup.kill also kills what its cgroup is forking. Elsewhere the
            // kernel must kill a child born to a doomed holder, for a fork
            // already past its fatal-signal check.
            for (pid, grant, _) in holders.iter().filter(|(_, g, _)| !contained.contains(g)) {
                // Best effort: a full map only loses the in-kernel fork kill.
                let _ = kernel.set_holder(*pid, *grant, HolderState::Doomed);
            }
        }
        let mut killed = holders.len();
        if self.kernel.is_none() && self.cgroups.is_none() {
            let roots: HashSet<Pid> = holders.iter().map(|(pid, _, _)| *pid).collect();
            let grant = grants.iter().next().copied().unwrap_or_default();
            for pid in process::descendants_of(&roots) {
                if let Ok(pidfd) = Pidfd::open(pid) {
                    let _ = pidfd.kill();
                    self.track_holder(pid, grant, pidfd);
                    killed += 1;
                }
            }
        }
        killed
    }

    /// A holder's child, reported by the kernel with the grant it inherited;
    /// the parent may already be gone, so the grant comes from the event.
    fn holder_forked(&mut self, child: Pid, grant: GrantId) {
        let Some(doomed) = self.sessions.grants.get(&grant).map(|g| g.doomed) else {
            // A grant the guardian no longer knows: its holders were all reaped,
            // so this child can only hold wiped secrets. Kill it.
            if let Ok(pidfd) = Pidfd::open(child) {
                let _ = pidfd.kill();
            }
            return;
        };
        // A child that already exited cannot be opened; its exit needs no kill.
        let Ok(pidfd) = Pidfd::open(child) else {
            return;
        };
        if doomed {
            let _ = pidfd.kill();
            for trigger in self
                .triggers
                .iter_mut()
                .filter(|t| t.grants.contains(&grant))
            {
                trigger.killed += 1;
            }
        }
        self.track_holder(child, grant, pidfd);
    }

    fn holder_exited(&mut self, pid: Pid, ktime_ns: u64) {
        // With eBPF the exit program has already taken it out of the map.
        let Some((grant, emptied)) = self.sessions.remove_holder(pid) else {
            return;
        };
        if emptied && let Some(cgroups) = &self.cgroups {
            cgroups.remove(grant);
        }
        for trigger in self
            .triggers
            .iter_mut()
            .filter(|t| t.grants.contains(&grant))
        {
            trigger.last_dead_ns = trigger.last_dead_ns.max(ktime_ns);
        }
        self.check_triggers();
    }

    /// Records every trigger whose holders are all dead, or that waited too long.
    fn check_triggers(&mut self) {
        let now = Instant::now();
        let mut index = 0;
        while index < self.triggers.len() {
            let trigger = &self.triggers[index];
            let survivors = self.sessions.holders_in(&trigger.grants);
            if survivors.is_empty() || now >= trigger.deadline {
                let trigger = self.triggers.swap_remove(index);
                self.record_trigger(&trigger, survivors.len());
            } else {
                // Holders still alive: signal again (a no-op for the dying).
                survivors
                    .iter()
                    .for_each(|(_, _, pidfd)| drop(pidfd.kill()));
                index += 1;
            }
        }
        if !self.triggers.is_empty() && !self.tick_scheduled {
            self.tick_scheduled = true;
            let to_core = self.to_self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RECHECK).await;
                let _ = to_core.send(Msg::Tick);
            });
        }
    }

    fn record_trigger(&mut self, trigger: &PendingTrigger, survivors: usize) {
        let holders_dead_ns = (trigger.killed > 0 && survivors == 0)
            .then(|| trigger.last_dead_ns.saturating_sub(trigger.start_ns));
        self.record(Entry {
            action: "trigger".to_owned(),
            names: trigger.names.clone(),
            peer: None,
            leader: trigger.leader.map(Pid::raw),
            outcome: if survivors == 0 {
                Outcome::Wiped
            } else {
                Outcome::HoldersSurvived
            },
            reason: Some(trigger.cause.as_str().to_owned()),
            latency: Some(Latency {
                start_ns: trigger.start_ns,
                wiped_ns: trigger.wiped_ns.saturating_sub(trigger.start_ns),
                holders_dead_ns,
                holders: trigger.killed,
            }),
        });
    }

    fn record(&mut self, entry: Entry) {
        if let Err(err) = self.audit.append(&entry) {
            tracing::error!(%err, action = entry.action, "cannot write the audit log");
        }
    }

    fn fresh_grant(&mut self) -> GrantId {
        self.next_grant = self.next_grant.wrapping_add(1).max(1);
        self.next_grant
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Spawns a task that sends `msg` once the process behind `pidfd` exits.
    fn on_exit(&self, pidfd: Arc<Pidfd>, msg: Msg) -> AbortHandle {
        let to_core = self.to_self.clone();
        tokio::spawn(async move {
            // SAFETY: the Pidfd owns its fd, which stays open and the same until
            // the last Arc (one of them inside this AsyncFd) is dropped.
            if let Ok(fd) = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
                // Readable means exited; an error means the same for our purpose.
                let _ = fd.readable().await;
            }
            let _ = to_core.send(msg);
        })
        .abort_handle()
    }

    /// Spawns a timer that reports the TTL expiry of secret `id` under `key`.
    fn expire_after(&self, ttl: Duration, key: SecretKey, id: u64) -> AbortHandle {
        let to_core = self.to_self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            let _ = to_core.send(Msg::Expired { key, id });
        })
        .abort_handle()
    }
}

/// The error for a process that could not be inspected: "no such process"
/// when it is gone, the cause otherwise.
fn inspect_error(pid: Pid, err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ESRCH | libc::ENOENT) => format!("no such process: {pid}"),
        _ => format!("cannot inspect process {pid}: {err}"),
    }
}

/// Refuses a caller that is being traced: its tracer could read what it gets.
fn untraced(peer: &Peer) -> Result<(), String> {
    let status = match &peer.status {
        Some(file) => file.read(),
        None => Status::read(peer.pid),
    };
    let status = status.map_err(|_| "the caller has exited".to_owned())?;
    match status.tracer {
        0 => Ok(()),
        tracer => Err(format!(
            "refusing to hand secrets to a process traced by PID {tracer}"
        )),
    }
}

/// A PTRACE_ATTACH queues a SIGSTOP for its target even though the attacker
/// dies at syscall entry. The supervisor un-stops the guardian; this un-stops
/// the supervisor, checking for a little while because the stop may land after
/// the event that announced the attack.
fn continue_if_stopped(process: Arc<Pidfd>) {
    tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if process::is_stopped(process.pid()) {
                let _ = process.send(libc::SIGCONT);
            }
        }
    });
}

fn request_names(request: &Request) -> Vec<SecretName> {
    match request {
        Request::Put { name, .. } | Request::Get { name } | Request::Revoke { name } => {
            vec![name.clone()]
        }
        Request::Exec { names } => names.clone(),
        Request::List {} | Request::Status {} | Request::WipeAll {} => Vec::new(),
    }
}
