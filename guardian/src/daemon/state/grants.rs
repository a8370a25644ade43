//! Holders the guardian did not hear of, and grants after their known
//! holders. After holder events were lost, the books are read off the
//! kernel's holder map. A grant is forgotten only once its
//! cgroup is empty and removed. Until then it drains: the processes in it
//! that the guardian never heard of (a fork report lost, or no eBPF to make
//! one) still hold its secrets, so its secrets still doom it and a trigger
//! still kills its cgroup. Each tick also forgets holders that are dead
//! although their exit reports were lost.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use super::{
    Core,
    os::{Containment, KernelMaps, Os, Process},
    sessions::GrantId,
    triggers::Cause,
};
use crate::os::process::Pid;

impl<O: Os> Core<O> {
    /// A grant whose last known holder is gone: forgotten if its cgroup is
    /// empty and removed, otherwise left to drain and swept on later ticks.
    pub(super) fn retire_grant(&mut self, grant: GrantId) {
        let gone = match &self.cgroups {
            Some(cgroups) => !cgroups.populated(grant) && cgroups.remove(grant),
            None => true,
        };
        if gone {
            if let Some(kernel) = &mut self.kernel {
                kernel.forget_grant(grant);
            }
            self.sessions.grants.remove(&grant);
            self.draining.remove(&grant);
            self.drop_files(grant);
        } else {
            self.draining.insert(grant);
            self.schedule_tick();
        }
    }

    /// Forgets the dead that no report announced, then retires the draining
    /// grants whose cgroups have emptied.
    pub(super) fn sweep(&mut self) {
        self.forget_dead_holders();
        for grant in self.draining.clone() {
            if self.sessions.has_holders(grant) {
                // A fork report brought it a known holder again.
                self.draining.remove(&grant);
            } else {
                self.retire_grant(grant);
            }
        }
    }

    /// After holder events were lost (a user's holders forked faster than
    /// the guardian read): with cgroups, the books are set right from the
    /// kernel's holder map, since every holder the guardian missed is in
    /// that map and in its grant's cgroup, which a trigger kills whole.
    /// Without cgroups a missed holder would outlive a trigger, so every
    /// secret is wiped.
    pub(super) fn holder_events_lost(&mut self) {
        let lost = self
            .kernel
            .as_ref()
            .map_or(0, KernelMaps::holder_events_lost);
        if lost <= self.holder_lost_seen {
            return;
        }
        self.holder_lost_seen = lost;
        if self.cgroups.is_none() {
            tracing::error!(
                lost,
                "holder events were lost without cgroups; wiping every secret"
            );
            return self.wipe_everything(Cause::KernelEventsLost);
        }
        tracing::warn!(
            lost,
            "holder events were lost; reading holders off the kernel map"
        );
        self.reconcile_holders();
    }

    /// Makes the known holders those of the kernel's map: the ones gone from
    /// it have exited, the ones missing from the books were forked unseen.
    fn reconcile_holders(&mut self) {
        let Some(kernel) = &self.kernel else {
            return;
        };
        let in_kernel: HashMap<Pid, GrantId> = kernel.holders().into_iter().collect();
        let gone: Vec<Pid> = (self.sessions.holders.keys())
            .filter(|pid| !in_kernel.contains_key(pid))
            .copied()
            .collect();
        for pid in gone {
            self.holder_exited(pid, self.os.now_ns());
        }
        for (pid, grant) in in_kernel {
            if !self.sessions.holders.contains_key(&pid) {
                self.holder_forked(pid, grant);
            }
        }
    }

    /// Holders that are dead though no exit report came (lost with the ring
    /// buffer, or raced with the exec): one with a handle whose process has
    /// exited, one without in a grant whose cgroup is empty. Their kernel
    /// map entries go too, so a process that reuses the pid is no holder.
    fn forget_dead_holders(&mut self) {
        let pid_only: HashSet<GrantId> = self
            .sessions
            .holders
            .values()
            .filter(|holder| holder.process.is_none())
            .map(|holder| holder.grant)
            .collect();
        // A pid-only holder is contained (see `needs_handle`), so its grant
        // has a cgroup; one read per grant, not per holder.
        let emptied: HashSet<GrantId> = match &self.cgroups {
            Some(cgroups) => pid_only
                .into_iter()
                .filter(|&grant| !cgroups.populated(grant))
                .collect(),
            None => HashSet::new(),
        };
        let dead: Vec<Pid> = self
            .sessions
            .holders
            .iter()
            .filter(|(_, holder)| match &holder.process {
                Some(process) => !process.is_alive(),
                None => emptied.contains(&holder.grant),
            })
            .map(|(&pid, _)| pid)
            .collect();
        for pid in dead {
            if let Some(kernel) = &mut self.kernel {
                kernel.remove_holder(pid);
            }
            if let Some((grant, true)) = self.sessions.remove_holder(pid) {
                self.retire_grant(grant);
            }
        }
    }
}
