//! Grants after their known holders: a grant is forgotten only once its
//! cgroup is empty and removed. Until then it drains: the processes in it
//! that the guardian never heard of (a fork report lost, or no eBPF to make
//! one) still hold its secrets, so its secrets still doom it and a trigger
//! still kills its cgroup. Each tick also forgets holders that are dead
//! although their exit reports were lost.

#![forbid(unsafe_code)]

use std::collections::HashSet;

use super::{
    Core,
    os::{Containment, KernelMaps, Os, Process},
    sessions::GrantId,
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
