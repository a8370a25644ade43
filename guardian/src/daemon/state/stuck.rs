//! Holders that outlive SIGKILL. The kernel can keep a killed process from
//! dying while one of its threads sleeps uninterruptibly; the way a holder
//! can arrange that by itself is FUSE (see `os::fuse`). At each tick of a
//! pending trigger, the guardian aborts the FUSE connections that hold its
//! surviving holders, audits each one, and kills them again.

#![forbid(unsafe_code)]

use std::collections::HashSet;

use super::{
    Core,
    os::{Os, Process},
};
use crate::{
    audit::{Action, Entry, Outcome},
    os::process::Pid,
};

impl<O: Os> Core<O> {
    /// Frees, and kills again, the surviving holders of pending triggers
    /// that FUSE keeps alive.
    pub(super) fn free_stuck_holders(&mut self) {
        let grants: HashSet<_> = (self.triggers.iter())
            .flat_map(|trigger| trigger.grants.iter().copied())
            .collect();
        for (pid, _, process) in self.sessions.holders_in(&grants) {
            let aborted = self.os.free_from_fuse(pid);
            if aborted.is_empty() {
                continue;
            }
            if let Some(process) = &process {
                let _ = process.kill();
            }
            self.record_fuse_abort(pid, &aborted);
        }
    }

    fn record_fuse_abort(&mut self, holder: Pid, connections: &[u32]) {
        tracing::warn!(%holder, ?connections, "aborted FUSE connections that kept a holder alive");
        self.record(Entry {
            action: Action::FuseAbort,
            names: Vec::new(),
            peer: None,
            leader: None,
            outcome: Outcome::Allow,
            reason: Some(format!(
                "holder {holder} survived SIGKILL in uninterruptible sleep on FUSE: aborted \
                 connection(s) {connections:?} of its own mount namespace"
            )),
            latency: None,
        });
    }
}
