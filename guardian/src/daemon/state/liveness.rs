//! More signs that a session has stopped being watched than its leader's
//! death: logind locking its screen, or the machine going to sleep. Each is
//! a trigger unless the policy says `ignore` (`on_lock`, `on_suspend`). The
//! signals themselves come from `daemon::logind`, which accepts them only
//! from the bus name's real owner.

#![forbid(unsafe_code)]

use super::{Core, SecretKey, os::Os, triggers::Cause};
use crate::{config::Response, os::process::Pid};

impl<O: Os> Core<O> {
    /// A logind session holding `leaders` was locked: their secrets go.
    pub(super) fn session_locked(&mut self, leaders: &[Pid], at_ns: u64) {
        if self.config.on_lock == Response::Ignore {
            tracing::info!(?leaders, "session locked; on_lock = \"ignore\"");
            return;
        }
        let keys: Vec<SecretKey> = leaders
            .iter()
            .flat_map(|&leader| self.vault.bound_to(leader))
            .collect();
        self.trigger(Cause::SessionLocked, at_ns, keys, leaders.first().copied());
    }

    /// The machine is about to suspend: every secret goes.
    pub(super) fn suspending(&mut self, at_ns: u64) {
        if self.config.on_suspend == Response::Ignore {
            tracing::info!("suspending; on_suspend = \"ignore\"");
            return;
        }
        let keys = self.vault.keys();
        self.trigger(Cause::Suspend, at_ns, keys, None);
    }

    /// The leaders whose sessions logind is asked about.
    pub fn leaders(&self) -> Vec<Pid> {
        let mut leaders: Vec<Pid> = self.sessions.leaders.keys().copied().collect();
        leaders.sort_unstable_by_key(|pid| pid.raw());
        leaders
    }

    /// The leaders, if any was watched or unwatched since the last call: the
    /// daemon asks after every step, and a step rarely moves a leader.
    pub fn leaders_if_moved(&mut self) -> Option<Vec<Pid>> {
        std::mem::take(&mut self.leaders_moved).then(|| self.leaders())
    }
}
