//! Each check: the facts read off the host (and the guardian's `status`,
//! where it answers) judged `ok`, `weaker` or `missing`, said plainly,
//! with the fix where there is one. What each says of the guardian is what
//! its code does: `os::peer` (SO_PEERPIDFD), `kernel::early_kill`
//! (bpf_send_signal_task), `kernel::lsm`, `kernel::syscalls` (the tables
//! watched), `os::hardening` (core limits).
//!
//! Layout: the report's types and the list of checks are here; the checks
//! themselves are in `kernel` (BPF LSM, the system-call tables seen, and
//! what the kernel's version gives), `sysctl` (the sysctls the guardian
//! leans on) and `userspace` (procps and the guardian).

#![forbid(unsafe_code)]

mod kernel;
mod sysctl;
mod userspace;

use serde::Serialize;

pub(super) use self::{
    kernel::{bpf_lsm, early_kill, kernel, peer_pidfd, syscall_tables},
    sysctl::{core_pattern, io_uring, ptrace_scope, tiocsti},
    userspace::{guardian, procps},
};
use super::host::Facts;
use crate::protocol::{StatusInfo, TamperProtection};

text_enum! {
    /// How a check came out.
    pub enum Verdict {
        /// As strong as it gets.
        Ok = "ok",
        /// Works, but less well than it could.
        Weaker = "weaker",
        /// Not there.
        Missing = "missing",
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is checked, one word.
    pub name: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found, and what it means here.
    pub found: String,
    /// What to do to get the strongest, one step a line (empty: nothing).
    pub fix: Vec<String>,
}

impl Check {
    fn new(name: &'static str, verdict: Verdict, found: impl Into<String>) -> Self {
        Self {
            name,
            verdict,
            found: found.into(),
            fix: Vec::new(),
        }
    }

    fn fix(mut self, steps: impl IntoIterator<Item = String>) -> Self {
        self.fix.extend(steps);
        self
    }
}

/// The guardian as `doctor` found it.
#[derive(Clone, Debug)]
pub enum Guardian {
    /// It answered `status`.
    Running(Box<StatusInfo>),
    /// It did not; why.
    NotReached(String),
}

impl Guardian {
    fn status(&self) -> Option<&StatusInfo> {
        match self {
            Self::Running(status) => Some(status),
            Self::NotReached(_) => None,
        }
    }

    /// True when the guardian runs in its strongest mode.
    pub fn is_strongest(&self) -> bool {
        self.status()
            .is_some_and(|status| status.tamper_protection == TamperProtection::BpfLsmTracepoints)
    }

    fn tamper_protection(&self) -> Option<TamperProtection> {
        self.status().map(|status| status.tamper_protection)
    }
}

/// Every check, in the order they are shown.
pub(super) fn all(facts: &Facts, guardian: &Guardian) -> Vec<Check> {
    vec![
        bpf_lsm(facts, guardian),
        syscall_tables(facts, guardian),
        kernel(facts),
        peer_pidfd(facts, guardian),
        early_kill(facts, guardian),
        io_uring(facts, guardian),
        ptrace_scope(facts),
        core_pattern(facts, guardian),
        tiocsti(facts),
        procps(facts, guardian),
        self::guardian(facts, guardian),
    ]
}
