//! What a record says (the schema in docs/AUDIT.md): what it is about, who
//! asked, how it ended, and for triggers how long it took.

#![forbid(unsafe_code)]

use serde::Serialize;

use crate::os::peer::Peer;

text_enum! {
    /// What a record is about: a request's verb, or an event of the guardian's own.
    pub enum Action {
        /// A `put` request.
        Put = "put",
        /// A `put --replace` request: new bytes under a secret's binding and
        /// TTL, its old holders killed.
        Replace = "replace",
        /// A `get` request.
        Get = "get",
        /// An `exec` request.
        Exec = "exec",
        /// A `list` request.
        List = "list",
        /// A `revoke` request.
        Revoke = "revoke",
        /// A `wipe --all` request.
        WipeAll = "wipe_all",
        /// A `status` request.
        Status = "status",
        /// Secrets wiped and their holders killed.
        Trigger = "trigger",
        /// A message that was not a request.
        Malformed = "malformed",
        /// A ptrace or process_vm_readv/writev stopped in the kernel.
        Tamper = "tamper",
        /// A torn line cut off the end of the log at start-up.
        AuditTornTail = "audit_torn_tail",
        /// Records that could not be written (a full disk), once it can be again.
        AuditGap = "audit_gap",
        /// Damaged records found in the log at start-up; the file was moved aside.
        AuditDamaged = "audit_damaged",
        /// FUSE connections aborted to free a holder that outlived SIGKILL.
        FuseAbort = "fuse_abort",
    }
}

impl Action {
    /// True for the requests that hand a secret in or out (`put`,
    /// `replace`, `get`, `exec`): refused when their record cannot be written.
    pub fn needs_its_record(self) -> bool {
        matches!(
            self,
            Action::Put | Action::Replace | Action::Get | Action::Exec
        )
    }

    /// True for the requests that store a secret, undone when their record
    /// cannot be written.
    pub fn stores(self) -> bool {
        matches!(self, Action::Put | Action::Replace)
    }
}

/// How a request or trigger ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request was carried out.
    Allow,
    /// The request was refused.
    Deny,
    /// A trigger wiped secrets and every holder is dead.
    Wiped,
    /// A trigger wiped secrets but some holder outlived the wait.
    HoldersSurvived,
}

/// Measured latencies of a trigger, on the kernel's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// When the trigger happened (CLOCK_MONOTONIC ns): the eBPF event's time,
    /// or when the guardian noticed it.
    pub start_ns: u64,
    /// Trigger to every secret wiped.
    pub wiped_ns: u64,
    /// Trigger to the last holder dead; `None` if there were no holders.
    pub holders_dead_ns: Option<u64>,
    /// Holders killed.
    pub holders: usize,
}

/// What a caller tells the log; sequence, time and chain are added here.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// What the record is about.
    pub action: Action,
    /// Secret names involved (none for list and status).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Who asked; absent for kernel triggers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    /// The session leader involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<i32>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why: the error for a denial, the cause for a trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For triggers, what it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

/// A line of the log before it is sealed: an entry with the place in the
/// sequence, the times and the chain the log adds.
#[derive(Serialize)]
pub(super) struct Record<'a> {
    pub(super) seq: u64,
    pub(super) time: String,
    pub(super) mono_ns: u64,
    #[serde(flatten)]
    pub(super) entry: &'a Entry,
    pub(super) prev: &'a str,
}
