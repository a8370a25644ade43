//! The guardian's state machine: one owner of every secret, session and kernel
//! map, which handles, in order, requests from connections, events from the
//! kernel, and reports from exit watchers and timers. Owning the state in one
//! place means a trigger and a request can never interleave halfway.
//!
//! Enforcement is always "wipe, then kill": secrets are zeroized before any
//! holder is signalled, so nothing a dying holder does can delay the wipe.
//!
//! Everything it does to the operating system goes through [`os::Os`], so the
//! unit tests drive this very code against a fake world.
//!
//! # Layout
//! - this file: the messages it takes, its fields, and the dispatcher;
//! - [`requests`](self::requests): put, get, exec, list, revoke, wipe, and the
//!   audit record of each; [`access`](self::access): who may bind and use what;
//! - [`holders`](self::holders): leaders and holders coming and going;
//!   [`grants`](self::grants): grants that drain after their known holders;
//! - [`triggers`](self::triggers): wipe, then kill, then record;
//!   [`tamper`](self::tamper): attempts the kernel stopped;
//!   [`environ`](self::environ): which environments anyone may read;
//! - [`status`](self::status): the `status` report;
//! - [`vault`], [`sessions`]: the bookkeeping; [`budget`]: locked bytes per
//!   user; [`errors`]: refusals;
//!   [`os`]: the interface to the system, [`host`]: its production side.

mod access;
pub mod budget;
mod environ;
pub mod errors;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fake;
mod files;
mod grants;
mod holders;
pub mod host;
mod liveness;
mod malformed;
pub mod os;
mod requests;
mod retired;
pub mod sessions;
mod status;
mod stuck;
mod tamper;
#[cfg(test)]
mod tests;
mod triggers;
pub mod vault;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use guardian_ebpf::{Event, EventKind};
use tokio::sync::oneshot;

use self::{
    budget::{Budget, Charge},
    malformed::MalformedBooks,
    os::{KernelMaps, Os, Task},
    sessions::{GrantId, Sessions},
    tamper::TamperBooks,
    triggers::{Cause, PendingTrigger},
    vault::Vault,
};
pub use self::{errors::RequestError, vault::SecretKey};
use crate::{
    audit::{Entry, commit::Unsynced},
    config::Config,
    os::{peer::Peer, process::Pid, secret_mem::SecretBuf},
    protocol::{Request, Response},
};

/// What the state machine is told.
pub enum Msg {
    /// A parsed request from a connection.
    Request {
        /// Who sent it.
        peer: Peer,
        /// What it asks.
        request: Request,
        /// The secret bytes of a `put`.
        payload: Option<Payload>,
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
    /// A leader's exit watcher fired.
    LeaderGone {
        /// The leader.
        pid: Pid,
        /// Which binding of that pid.
        id: u64,
    },
    /// A holder's exit watcher fired.
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
    /// Re-check of triggers still waiting for holders to die, and sweep of
    /// draining grants (scheduled only while either exists, so an idle
    /// guardian never wakes).
    Tick,
    /// Time to audit the tamper attempts the kernel counted but did not
    /// report one by one (scheduled only after a tamper record).
    TamperSummary,
    /// The end of a second with malformed messages: time to sum up those
    /// not recorded one by one.
    MalformedSummary,
    /// logind says a session was locked (`Session.Lock`): these watched
    /// leaders are in it.
    SessionLocked {
        /// The leaders in the locked session.
        leaders: Vec<Pid>,
        /// When the signal arrived, on the kernel's monotonic clock.
        at_ns: u64,
    },
    /// logind says the machine is about to suspend (`PrepareForSleep(true)`).
    Suspending {
        /// When the signal arrived, on the kernel's monotonic clock.
        at_ns: u64,
    },
    /// Whether lock and suspend are watched now, and if not, why.
    LockWatch {
        /// Why they are not, or `None` when they are.
        error: Option<String>,
    },
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

/// The secret bytes of a `put`, read off the socket into locked memory that
/// was charged to the sender's budget before it was allocated.
#[derive(Debug)]
pub struct Payload {
    /// The bytes.
    pub bytes: SecretBuf,
    /// Their charge, which the stored secret keeps.
    pub charge: Charge,
}

/// The answer to a request: a response header and the secrets that follow it.
/// (Its `Debug` shows secrets' lengths only.)
#[derive(Debug)]
pub struct Reply {
    /// The header.
    pub response: Response,
    /// Copies of secrets in locked memory, written after the header and wiped.
    pub secrets: Vec<SecretBuf>,
    /// What the copies count against their user's budget, until dropped with them.
    pub charge: Option<Charge>,
    /// Descriptors of secret files (`exec --file`), sent with the header.
    pub files: Vec<std::os::fd::OwnedFd>,
}

impl Reply {
    fn refused(err: &RequestError) -> Self {
        Self::plain(Response::Error {
            message: err.to_string(),
            kind: err.kind(),
        })
    }

    fn plain(response: Response) -> Self {
        Self {
            response,
            secrets: Vec::new(),
            charge: None,
            files: Vec::new(),
        }
    }
}

/// What the daemon set up before the state machine starts.
pub struct Setup<O: Os> {
    /// The eBPF link, or why there is none.
    pub kernel: Result<O::Kernel, String>,
    /// Policy.
    pub config: Config,
    /// Per-exec containment, where cgroup v2 is available.
    pub cgroups: Option<O::Containment>,
    /// Locked bytes per user, shared with the server (which charges a
    /// `put`'s bytes before reading them).
    pub budget: Budget,
    /// The supervisor that kills holders if the guardian dies.
    pub supervisor: Option<O::Process>,
    /// Most execs whose holders may live at once (each costs descriptors).
    pub max_grants: usize,
    /// Where the guardian listens and logs, for `status`.
    pub paths: Paths,
}

/// Where the guardian listens and logs.
#[derive(Clone, Debug, Default)]
pub struct Paths {
    /// The socket.
    pub socket: std::path::PathBuf,
    /// The audit log.
    pub audit_log: std::path::PathBuf,
}

/// The guardian's whole state.
pub struct Core<O: Os> {
    os: O,
    vault: Vault,
    sessions: Sessions<O::Process>,
    triggers: Vec<PendingTrigger>,
    kernel: Option<O::Kernel>,
    kernel_error: Option<String>,
    dropped_seen: u64,
    /// Holder events lost so far, as last seen.
    holder_lost_seen: u64,
    tamper_books: TamperBooks,
    malformed: MalformedBooks,
    config: Config,
    budget: Budget,
    cgroups: Option<O::Containment>,
    /// The supervisor and the watcher of its exit.
    supervisor: Option<(Arc<O::Process>, Task)>,
    max_grants: usize,
    paths: Paths,
    /// When the state machine started, for `status`'s uptime.
    started: std::time::Instant,
    next_id: u64,
    next_grant: GrantId,
    /// Grants whose known holders are gone but whose cgroups are not empty.
    draining: HashSet<GrantId>,
    /// Secrets delivered as files, by the grant they were given to.
    files: HashMap<GrantId, Vec<files::GrantFile<O::SecretFile>>>,
    /// Why logind's lock and suspend signals are not watched, if they are not.
    lock_watch: Option<String>,
    /// A leader was watched or unwatched since the set was last taken.
    leaders_moved: bool,
    /// The next tick, while one is scheduled, and the interval it was set for.
    tick: Option<(Task, Duration)>,
    unsynced: Vec<Unsynced>,
    /// Leaders no longer watched whose session members are still wards.
    unwatched: Vec<Pid>,
}

impl<O: Os> Core<O> {
    /// A state machine with no secrets, acting through `os`.
    pub fn new(os: O, setup: Setup<O>) -> Self {
        let (kernel, kernel_error) = match setup.kernel {
            Ok(link) => (Some(link), None),
            Err(err) => (None, Some(err)),
        };
        let supervisor = setup.supervisor.map(|process| {
            let process = Arc::new(process);
            let watcher = os.on_exit(Arc::clone(&process), Msg::SupervisorGone);
            (process, watcher)
        });
        let started = os.now();
        Self {
            os,
            vault: Vault::default(),
            sessions: Sessions::default(),
            triggers: Vec::new(),
            kernel,
            kernel_error,
            dropped_seen: 0,
            holder_lost_seen: 0,
            tamper_books: TamperBooks::default(),
            malformed: MalformedBooks::default(),
            budget: setup.budget,
            config: setup.config,
            cgroups: setup.cgroups,
            supervisor,
            max_grants: setup.max_grants,
            paths: setup.paths,
            started,
            next_id: 1,
            next_grant: 0,
            draining: HashSet::new(),
            files: HashMap::new(),
            lock_watch: Some("not started".to_owned()),
            leaders_moved: false,
            tick: None,
            unsynced: Vec::new(),
            unwatched: Vec::new(),
        }
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
            Msg::Malformed { peer, reason } => self.malformed(peer, reason),
            Msg::LeaderGone { pid, id } => {
                if self
                    .sessions
                    .leaders
                    .get(&pid)
                    .is_some_and(|leader| leader.id == id)
                {
                    self.leader_gone(pid, Cause::LeaderExit, self.os.now_ns());
                }
            }
            Msg::HolderGone { pid } => self.holder_exited(pid, self.os.now_ns()),
            Msg::Expired { key, id } => {
                if self.vault.get(&key).is_some_and(|secret| secret.id == id) {
                    self.trigger(Cause::TtlExpired, self.os.now_ns(), vec![key], None);
                }
            }
            Msg::SupervisorGone => {
                tracing::error!("the supervisor died; wiping every secret");
                self.supervisor = None;
                self.wipe_everything(Cause::SupervisorLost);
            }
            Msg::SyncFailed { batch, error } => self.sync_failed(batch, &error),
            Msg::Tick => {
                self.tick = None;
                self.sweep();
                self.free_stuck_holders();
                self.kill_pending_containers();
                self.signal_survivors();
                self.check_triggers();
            }
            Msg::TamperSummary => self.summarize_tamper(),
            Msg::MalformedSummary => self.summarize_malformed(),
            Msg::SessionLocked { leaders, at_ns } => self.session_locked(&leaders, at_ns),
            Msg::Suspending { at_ns } => self.suspending(at_ns),
            Msg::LockWatch { error } => self.lock_watch = error,
            Msg::Shutdown => {
                self.wipe_everything(Cause::Shutdown);
                return false;
            }
        }
        true
    }

    /// Detaches the tamper tracepoints once no secret is held, no holder
    /// lives and no session that held one is left; `put` attaches them again
    /// before it stores anything. Not while a trigger waits for its holders:
    /// detaching rewrites kernel text, which stops every CPU with an
    /// interrupt, and the last holder's exit event comes before that holder
    /// has finished dying.
    pub fn disarm_if_idle(&mut self) {
        if self.vault.is_empty()
            && self.triggers.is_empty()
            && self.sessions.leaders.is_empty()
            && self.sessions.holders.is_empty()
            && self.sessions.grants.is_empty()
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
                Some(EventKind::EnvironChanged) => self.environ_changed(pid, event.request),
                None => tracing::warn!(kind = event.kind, "unknown kernel event"),
            }
        }
        let dropped = self.kernel.as_ref().map_or(0, KernelMaps::dropped_events);
        if dropped > self.dropped_seen {
            tracing::error!(dropped, "kernel events were lost; wiping every secret");
            self.dropped_seen = dropped;
            self.wipe_everything(Cause::KernelEventsLost);
        }
        self.holder_events_lost();
    }

    /// True while triggers are still waiting for holders to die.
    pub fn is_settling(&self) -> bool {
        !self.triggers.is_empty()
    }

    /// Hands the answers waiting since the last commit to the audit commit,
    /// which sends them once their records are durable; none is answered
    /// before. A batch that cannot be committed is refused.
    pub fn commit(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unsynced);
        if let Err((batch, err)) = self.os.audit_commit(batch) {
            self.sync_failed(batch, &err);
        }
    }

    /// Appends a record that nothing waits on.
    fn record(&mut self, entry: Entry) {
        if let Err(err) = self.os.audit_append(&entry) {
            tracing::error!(%err, action = %entry.action, "cannot write the audit log");
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
}
