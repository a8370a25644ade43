//! Why a request was refused. Each variant's message is both the reply the
//! client prints and the reason the audit log records.

#![forbid(unsafe_code)]

use std::io;

use super::budget::OverBudget;
use crate::{
    audit::Action,
    config::TtlTooLong,
    kernel::KernelError,
    os::{process::Pid, secret_mem::MemoryError},
    protocol::{ErrorKind, SecretName},
};

/// A refused request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A `put` whose secret bytes did not arrive.
    #[error("put without secret bytes")]
    MissingPayload,
    /// The caller already has a secret of that name.
    #[error("secret {0} already exists (put --replace gives it a new value; revoke removes it)")]
    Exists(SecretName),
    /// `put --replace` with a binding or TTL of its own.
    #[error(
        "--replace keeps the secret's binding and TTL; to change them, revoke it and put it anew"
    )]
    ReplaceKeepsBinding,
    /// `put --replace` from a process that holds the value it replaces.
    #[error(
        "this process holds the value of {0} it would replace, and would be killed with it; \
         replace it from outside that exec"
    )]
    ReplaceByHolder(SecretName),
    /// A request only root may make.
    #[error("only root may ask for {0}")]
    RootOnly(&'static str),
    /// The secret exceeds the policy's size limit.
    #[error("secret is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The policy's limit.
        limit: usize,
    },
    /// The secrets asked for add up to more than one reply may carry.
    #[error("the secrets asked for come to {bytes} bytes, more than one reply carries ({limit})")]
    ReplyTooLarge {
        /// Their total size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The caller's user has as much locked in the guardian as it may.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    /// The caller holds as many secrets as the policy allows.
    #[error("this user already holds the maximum of {limit} secrets")]
    TooManySecrets {
        /// The policy's limit.
        limit: usize,
    },
    /// The TTL asked for exceeds the policy's maximum.
    #[error(transparent)]
    Ttl(#[from] TtlTooLong),
    /// The tamper programs could not be attached, so nothing is stored.
    #[error("cannot arm tamper protection: {0}")]
    Arm(KernelError),
    /// The caller's session could not be read.
    #[error("cannot find the caller's session: {0}")]
    CallerSession(io::Error),
    /// The caller is in session 0 and named no leader.
    #[error("the caller is in no login session (session 0); bind with --bind PID")]
    NoSession,
    /// PID 1 never exits, so binding to it would never wipe.
    #[error("refusing to bind to PID 1: it never exits")]
    BindInit,
    /// The guardian cannot be its own secrets' leader.
    #[error("refusing to bind to the guardian itself")]
    BindGuardian,
    /// There is no such process.
    #[error("no such process: {0}")]
    NoSuchProcess(Pid),
    /// The process exists but could not be inspected.
    #[error("cannot inspect process {pid}: {source}")]
    Inspect {
        /// The process.
        pid: Pid,
        /// Why.
        source: io::Error,
    },
    /// The pid names a thread, not a process.
    #[error("PID {tid} is a thread of process {tgid}, not a process; bind to the process")]
    Thread {
        /// The thread.
        tid: Pid,
        /// Its process.
        tgid: i32,
    },
    /// The caller is its own session's leader (`setsid put`).
    #[error(
        "refusing to bind to PID {0}, this put process itself: it exits once the secret is \
         stored, which would wipe it at once; bind to your shell instead: --bind $$"
    )]
    BindCaller(Pid),
    /// The pid names a kernel thread.
    #[error("refusing to bind to PID {0}: a kernel thread")]
    KernelThread(Pid),
    /// A non-root caller named another user's process.
    #[error("PID {0} belongs to another user")]
    OtherUser(Pid),
    /// A non-root caller named a process of a session it is not in: it
    /// could otherwise plant a value under a name the session will use.
    #[error(
        "PID {0} is in a session you are not in; a secret may be bound only to a process of \
         your own session (from session 0, to an ancestor; root may bind anywhere)"
    )]
    BindOutsideSession(Pid),
    /// The process exited while it was being checked.
    #[error("process {0} has exited")]
    Exited(Pid),
    /// The kernel map of leaders refused the new leader.
    #[error("cannot watch {pid}: {source}")]
    Watch {
        /// The leader.
        pid: Pid,
        /// Why.
        source: KernelError,
    },
    /// The caller has no secret of that name.
    #[error("no such secret: {0}")]
    NoSuchSecret(SecretName),
    /// The caller is outside the session the secret is bound to.
    #[error("{name} is bound to the session of PID {leader}; this process is outside it")]
    OutsideSession {
        /// The secret.
        name: SecretName,
        /// Its leader.
        leader: Pid,
    },
    /// The caller is being traced, and its tracer could read the secret.
    #[error("refusing to hand secrets to a process traced by PID {0}")]
    Traced(i32),
    /// A process of the session is traced by one outside it: ptrace
    /// requests that never touch memory (registers, system calls) would let
    /// the tracer make it ask for the session's secrets.
    #[error(
        "PID {member} of this session is traced by PID {tracer} ({exe}), which is outside the \
         session and could make it ask for secrets; end that tracer, or use a session it does \
         not trace"
    )]
    TracedFromOutside {
        /// The traced process.
        member: Pid,
        /// Its tracer.
        tracer: Pid,
        /// The tracer's executable.
        exe: String,
    },
    /// The caller exited before it could be checked or contained.
    #[error("the caller has exited")]
    CallerExited,
    /// No locked memory for the reply's copy.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The guardian runs as many execs as its descriptors allow.
    #[error("the guardian is at its limit of {limit} running execs; try again later")]
    TooManyExecs {
        /// The limit.
        limit: usize,
    },
    /// The caller's user runs its share of execs.
    #[error("this user is at its limit of {limit} running execs")]
    TooManyExecsOfUser {
        /// The limit.
        limit: usize,
    },
    /// The caller could not be moved into its grant's cgroup.
    #[error("cannot contain the command in a cgroup: {0}")]
    Contain(io::Error),
    /// An exec said how to deliver a different number of secrets than it named.
    #[error("an exec names {names} secrets but says how to deliver {delivery}")]
    Delivery {
        /// Secrets named.
        names: usize,
        /// Deliveries given.
        delivery: usize,
    },
    /// A secret file (`exec --file`) could not be made.
    #[error("cannot make the secret file: {0}")]
    SecretFile(io::Error),
    /// The kernel map of secret files refused a file.
    #[error("cannot guard the secret file: {0}")]
    GuardFile(KernelError),
    /// The kernel map of holders refused the caller.
    #[error("{0}")]
    HolderMap(KernelError),
    /// The request's audit record cannot be made durable, so it is undone.
    #[error("audit log unavailable ({source}); {action} refused")]
    AuditUnavailable {
        /// The request's verb.
        action: Action,
        /// Why the log failed.
        source: io::Error,
    },
}

impl RequestError {
    /// The kind the client tells apart by its exit code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchSecret(_) => ErrorKind::NoSuchSecret,
            Self::RootOnly(_) => ErrorKind::PermissionDenied,
            _ => ErrorKind::Refused,
        }
    }

    /// The error for a process that could not be inspected: "no such
    /// process" when it is gone, the cause otherwise.
    pub fn inspecting(pid: Pid, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ESRCH | libc::ENOENT) => Self::NoSuchProcess(pid),
            _ => Self::Inspect { pid, source },
        }
    }
}
