//! Who holds what: watched session leaders, the processes holding secrets
//! (holders) and the grants that tie a tree of holders to the secrets one
//! `exec` handed out. Pure bookkeeping; signals and the kernel maps are the
//! caller's business.

#![forbid(unsafe_code)]

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{os::Task, retired::RetiredValues, vault::SecretKey};
pub use crate::os::cgroup::GrantId;
use crate::os::process::{Pid, Uid};

/// A watched session leader.
pub struct Leader {
    /// Distinguishes this leader from a later process that reuses the pid.
    pub id: u64,
    /// The user whose process it is.
    pub owner: Uid,
    /// The leader's session id, for the "same session" check; `None` for
    /// session 0, which matches no one.
    pub sid: Option<Pid>,
    /// The task waiting for the leader to exit.
    pub watcher: Task,
    /// Sent SIGHUP and still alive: its session stays guarded, and the next
    /// `put` bound to it watches for a hangup again.
    pub hung_up: bool,
    /// Values wiped while it lives, still looked for in its session's
    /// environments.
    pub retired: RetiredValues,
}

impl Leader {
    /// True if a process in session `sid` is in this leader's session.
    /// Session 0 (`None`) is the kernel's catch-all, never a shared session.
    pub fn shares_session(&self, sid: Option<Pid>) -> bool {
        same_session(self.sid, sid)
    }
}

fn same_session(a: Option<Pid>, b: Option<Pid>) -> bool {
    a.is_some() && a == b
}

/// A process holding secrets; `P` is its handle (a pidfd).
pub struct Holder<P> {
    /// The grant it belongs to.
    pub grant: GrantId,
    /// Its handle, so a kill never reaches a process that reused the pid.
    /// `None` for a holder in its grant's cgroup while the kernel reports its
    /// exit: the cgroup kills it, and a tree of thousands costs no descriptor.
    pub process: Option<Arc<P>>,
    /// The task waiting for it to exit; `None` when the kernel reports it.
    pub watcher: Option<Task>,
}

/// The secrets handed to one `exec`, and whether they have been wiped.
pub struct Grant {
    /// The user whose `exec` made it.
    pub owner: Uid,
    /// Secrets the grant's holders received.
    pub secrets: HashSet<SecretKey>,
    /// True once any of those secrets was wiped: every holder must die.
    pub doomed: bool,
    /// Its holders live in a cgroup of their own.
    pub contained: bool,
}

/// The registry; `P` is a process handle.
pub struct Sessions<P> {
    /// Watched leaders by pid.
    pub leaders: HashMap<Pid, Leader>,
    /// Holders by pid.
    pub holders: HashMap<Pid, Holder<P>>,
    /// Grants by id.
    pub grants: HashMap<GrantId, Grant>,
}

impl<P> Default for Sessions<P> {
    fn default() -> Self {
        Self {
            leaders: HashMap::new(),
            holders: HashMap::new(),
            grants: HashMap::new(),
        }
    }
}

impl<P> Sessions<P> {
    /// The grants holding `key`'s current value (those of a replaced value
    /// are doomed, and dying).
    pub fn grants_holding(&self, key: &SecretKey) -> HashSet<GrantId> {
        self.grants
            .iter()
            .filter(|(_, grant)| !grant.doomed && grant.secrets.contains(key))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Live holders of `key`'s current value.
    pub fn holders_of(&self, key: &SecretKey) -> Vec<Pid> {
        let grants = self.grants_holding(key);
        let mut pids: Vec<Pid> = self
            .holders_in(&grants)
            .into_iter()
            .map(|(pid, _, _)| pid)
            .collect();
        pids.sort_unstable_by_key(|pid| pid.raw());
        pids
    }

    /// The secrets `grant`'s holders received (none for a grant that is gone).
    pub fn secrets_of(&self, grant: GrantId) -> Vec<SecretKey> {
        self.grants
            .get(&grant)
            .map(|grant| grant.secrets.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Marks every grant holding any of `keys` as doomed and returns their ids.
    pub fn doom_grants_of(&mut self, keys: &HashSet<SecretKey>) -> HashSet<GrantId> {
        let mut doomed = HashSet::new();
        for (&id, grant) in &mut self.grants {
            if !grant.secrets.is_disjoint(keys) {
                grant.doomed = true;
                doomed.insert(id);
            }
        }
        doomed
    }

    /// Holders belonging to any of `grants`.
    pub fn holders_in(&self, grants: &HashSet<GrantId>) -> Vec<(Pid, GrantId, Option<Arc<P>>)> {
        self.holders
            .iter()
            .filter(|(_, holder)| grants.contains(&holder.grant))
            .map(|(&pid, holder)| (pid, holder.grant, holder.process.clone()))
            .collect()
    }

    /// True while any holder belongs to one of `grants`.
    pub fn any_holder_in(&self, grants: &HashSet<GrantId>) -> bool {
        self.holders
            .values()
            .any(|holder| grants.contains(&holder.grant))
    }

    /// Grants made by `owner`'s execs that still have holders.
    pub fn grants_of(&self, owner: Uid) -> usize {
        self.grants
            .values()
            .filter(|grant| grant.owner == owner)
            .count()
    }

    /// Forgets a holder that exited. Returns its grant and whether that grant
    /// has no known holder left (the caller decides when to forget the grant:
    /// its cgroup may still hold processes the guardian never learnt of).
    pub fn remove_holder(&mut self, pid: Pid) -> Option<(GrantId, bool)> {
        // Dropping the holder cancels its watcher.
        let holder = self.holders.remove(&pid)?;
        Some((holder.grant, !self.has_holders(holder.grant)))
    }

    /// True while a known holder belongs to `grant`.
    pub fn has_holders(&self, grant: GrantId) -> bool {
        self.holders.values().any(|holder| holder.grant == grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_zero_is_nobody_s_session() {
        let sid = Pid::new(4242);
        assert!(same_session(sid, sid));
        assert!(!same_session(sid, Pid::new(4243)));
        assert!(!same_session(sid, None));
        assert!(!same_session(None, None), "two processes in session 0");
    }
}
