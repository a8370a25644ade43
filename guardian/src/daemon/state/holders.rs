//! Leaders and holders coming and going: watching a leader, making an `exec`
//! caller a holder (contained, in the kernel map), its children born holders,
//! and holders exiting.

#![forbid(unsafe_code)]

use std::{collections::HashSet, sync::Arc};

use guardian_ebpf::HolderState;

use super::{
    Core, Msg, RequestError, SecretKey,
    os::{Containment, KernelMaps, Os, Process},
    retired::RetiredValues,
    sessions::{Grant, GrantId, Holder, Leader},
    triggers::Cause,
};
use crate::os::{
    peer::Peer,
    process::{Pid, Uid},
};

/// Unwatched leaders whose wards may wait to be forgotten; past this, they
/// are forgotten even while a trigger's holders die.
const MAX_UNWATCHED: usize = 64;

impl<O: Os> Core<O> {
    /// True if `peer` is a holder of `key`'s current value: a known holder,
    /// a member of such a holder's cgroup (a child the kernel has not
    /// reported yet), or a descendant of one.
    pub(super) fn holds_value_of(&self, peer: &Peer, key: &SecretKey) -> bool {
        let grants = self.sessions.grants_holding(key);
        if grants.is_empty() {
            return false;
        }
        let in_cgroup = |grant: &GrantId| {
            self.cgroups
                .as_ref()
                .and_then(|cgroups| cgroups.members(*grant).ok())
                .is_some_and(|members| members.contains(&peer.pid))
        };
        self.sessions
            .holders_in(&grants)
            .iter()
            .any(|(pid, _, _)| *pid == peer.pid || self.os.descends_from(peer.pid, *pid))
            || grants.iter().any(in_cgroup)
    }

    /// Watches `leader`, whose handle is `process` (once, however many
    /// secrets are bound to it): by an exit watcher, and with eBPF in the
    /// kernel map of leaders too. True if it was not watched before. A
    /// leader watched since a hangup is watched for the next one again.
    pub(super) fn watch_leader(
        &mut self,
        leader: Pid,
        process: O::Process,
        owner: Uid,
    ) -> Result<bool, RequestError> {
        // Members of gone leaders' sessions still marked as theirs would keep
        // that mark in this session (a ward stays its first leader's).
        self.forget_wards_now();
        if let Some(watched) = self.sessions.leaders.get_mut(&leader) {
            if std::mem::take(&mut watched.hung_up) {
                let sid = watched.sid;
                self.watch_in_kernel(leader, sid, owner)?;
            }
            return Ok(false);
        }
        let sid = self
            .os
            .session_of(leader)
            .map_err(|err| RequestError::inspecting(leader, err))?;
        if !process.is_alive() {
            // The session was read by pid: it was this leader's only if it lives.
            return Err(RequestError::Exited(leader));
        }
        self.watch_in_kernel(leader, sid, owner)?;
        let id = self.fresh_id();
        let watcher = self
            .os
            .on_exit(Arc::new(process), Msg::LeaderGone { pid: leader, id });
        self.sessions.leaders.insert(
            leader,
            Leader {
                id,
                owner,
                sid,
                watcher,
                hung_up: false,
                retired: RetiredValues::default(),
            },
        );
        self.leaders_moved = true;
        Ok(true)
    }

    /// Puts `leader` in the kernel map of leaders, watched for its hangup,
    /// and its session `sid` among the wards, where there is eBPF.
    fn watch_in_kernel(
        &mut self,
        leader: Pid,
        sid: Option<Pid>,
        owner: Uid,
    ) -> Result<(), RequestError> {
        let Some(kernel) = &mut self.kernel else {
            return Ok(());
        };
        kernel
            .watch_leader(leader, sid, owner)
            .map_err(|source| RequestError::Watch {
                pid: leader,
                source,
            })
    }

    /// Stops watching `leader`.
    pub(super) fn unwatch_leader(&mut self, leader: Pid) {
        // Dropping the entry cancels its watcher.
        self.sessions.leaders.remove(&leader);
        self.leaders_moved = true;
        if let Some(kernel) = &mut self.kernel {
            kernel.unwatch_leader(leader);
        }
        self.unwatched.push(leader);
        self.forget_unwatched_wards();
    }

    /// Forgets the wards of unwatched leaders once no trigger is waiting for
    /// holders to die (or too many wait): it walks the whole ward map,
    /// several hundred microseconds of CPU that dying holders need more.
    /// Until then those sessions' members stay wards, guarded a moment longer.
    pub(super) fn forget_unwatched_wards(&mut self) {
        if self.triggers.is_empty() || self.unwatched.len() > MAX_UNWATCHED {
            self.forget_wards_now();
        }
    }

    /// Forgets the wards of every unwatched leader, in one walk.
    fn forget_wards_now(&mut self) {
        if self.unwatched.is_empty() {
            return;
        }
        let leaders = std::mem::take(&mut self.unwatched);
        if let Some(kernel) = &mut self.kernel {
            kernel.forget_wards_of(&leaders);
        }
    }

    /// Makes the caller a holder of `keys`: tracked by its handle and, with
    /// eBPF, in the kernel map so that its children become holders as they
    /// are born.
    pub(super) fn add_holder(
        &mut self,
        peer: &Peer,
        keys: Vec<SecretKey>,
    ) -> Result<GrantId, RequestError> {
        self.check_grant_room(peer)?;
        let pid = peer.pid;
        let process = self
            .os
            .open_caller(peer)
            .map_err(|_| RequestError::CallerExited)?;
        // A holder that execs again still holds what it had: its new grant
        // holds both, so either's wipe dooms it.
        let mut secrets: HashSet<SecretKey> = keys.into_iter().collect();
        if let Some(held) = self
            .sessions
            .holders
            .get(&pid)
            .and_then(|holder| self.sessions.grants.get(&holder.grant))
            .filter(|grant| grant.owner == peer.uid)
        {
            secrets.extend(held.secrets.iter().cloned());
        }
        let grant = self.fresh_grant();
        if let Err(err) = self.contain(grant, pid, &process) {
            self.retire_grant(grant);
            return Err(err);
        }
        // The caller waits for this reply, so it has forked nothing yet:
        // from here on every descendant is born inside the grant's cgroup.
        if let Err(err) = self.report_holder(pid, (grant, peer.uid), &process) {
            self.retire_grant(grant);
            return Err(err);
        }
        // A record of the caller under an older grant is replaced.
        if let Some((old, true)) = self.sessions.remove_holder(pid) {
            self.retire_grant(old);
        }
        let contained = self.cgroups.is_some();
        self.sessions.grants.insert(
            grant,
            Grant {
                owner: peer.uid,
                secrets,
                doomed: false,
                contained,
            },
        );
        let process = self.needs_handle(contained, peer.uid).then_some(process);
        self.track_holder(pid, grant, process);
        self.kill_early(pid, grant);
        Ok(grant)
    }

    /// Moves the caller `pid` into the cgroup of `grant`. The cgroup takes a
    /// pid number, which names another process once the caller has died and
    /// its pid has been reused: a caller found dead after the move has
    /// everything the move brought in put back where the pid was.
    fn contain(&self, grant: GrantId, pid: Pid, caller: &O::Process) -> Result<(), RequestError> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(());
        };
        let origin = cgroups
            .add(grant, pid)
            .map_err(|err| match caller.is_alive() {
                true => RequestError::Contain(err),
                false => RequestError::CallerExited,
            })?;
        if caller.is_alive() {
            return Ok(());
        }
        match cgroups.restore(grant, &origin) {
            Ok(moved) => tracing::warn!(
                %pid, ?moved, origin = %origin.display(),
                "the caller died before it was contained; its pid's process put back"
            ),
            Err(err) => tracing::error!(
                %pid, origin = %origin.display(), %err,
                "the caller died before it was contained; its pid's process could not be put back"
            ),
        }
        Err(RequestError::CallerExited)
    }

    /// Has the kernel kill `pid` at the exit of each leader its grant's
    /// secrets are bound to, without waiting for the guardian to wake.
    fn kill_early(&mut self, pid: Pid, grant: GrantId) {
        let (Some(kernel), Some(grant)) = (&mut self.kernel, self.sessions.grants.get(&grant))
        else {
            return;
        };
        let leaders: HashSet<Pid> = grant
            .secrets
            .iter()
            .filter_map(|key| self.vault.get(key).map(|secret| secret.leader))
            .collect();
        for leader in leaders {
            kernel.kill_at_exit_of(leader, pid);
        }
    }

    /// Refuses a new grant past the limits: each costs descriptors (its
    /// cgroup's files, a pidfd), which a teardown must never run short of.
    fn check_grant_room(&self, peer: &Peer) -> Result<(), RequestError> {
        let limit = self.max_grants;
        if self.sessions.grants.len() >= limit {
            return Err(RequestError::TooManyExecs { limit });
        }
        let per_uid = (limit / 4).max(1);
        if peer.uid != Uid::ROOT && self.sessions.grants_of(peer.uid) >= per_uid {
            return Err(RequestError::TooManyExecsOfUser { limit: per_uid });
        }
        Ok(())
    }

    /// True if a holder of a grant so contained, made by `owner`, must be
    /// tracked by a handle: without eBPF its exit is learnt from the handle;
    /// without a cgroup only the handle kills it safely; and root's holders
    /// may move themselves out of their cgroup.
    fn needs_handle(&self, contained: bool, owner: Uid) -> bool {
        self.kernel.is_none() || !contained || owner == Uid::ROOT
    }

    /// Puts a new holder in the kernel map, if there is one. Its exit is
    /// reported once it is in the map; an exit just before would not be, so
    /// a holder found dead after the insert is refused.
    fn report_holder(
        &mut self,
        pid: Pid,
        (grant, owner): (GrantId, Uid),
        process: &O::Process,
    ) -> Result<(), RequestError> {
        let Some(kernel) = &mut self.kernel else {
            return Ok(());
        };
        kernel
            .own_grant(grant, owner)
            .map_err(RequestError::HolderMap)?;
        kernel
            .set_holder(pid, grant, HolderState::Holding)
            .map_err(RequestError::HolderMap)?;
        // A caller already in its exit has passed the exit program that would
        // take it out of the map, yet its pidfd may not show it dead yet.
        let exiting = self.os.is_exiting(pid);
        if exiting || !process.is_alive() {
            kernel.remove_holder(pid);
            return Err(RequestError::CallerExited);
        }
        Ok(())
    }

    /// Records a holder. With eBPF the kernel reports its exit; an exit
    /// watcher as well would wake the guardian twice per exit, and a teardown
    /// of a hundred holders needs that CPU.
    pub(super) fn track_holder(&mut self, pid: Pid, grant: GrantId, process: Option<O::Process>) {
        let process = process.map(Arc::new);
        let watcher = match (&self.kernel, &process) {
            (None, Some(process)) => Some(
                self.os
                    .on_exit(Arc::clone(process), Msg::HolderGone { pid }),
            ),
            _ => None,
        };
        self.sessions.holders.insert(
            pid,
            Holder {
                grant,
                process,
                watcher,
            },
        );
    }

    /// A holder's child, reported by the kernel with the grant it inherited;
    /// the parent may already be gone, so the grant comes from the event.
    pub(super) fn holder_forked(&mut self, child: Pid, grant: GrantId) {
        let Some((doomed, contained, owner)) = self
            .sessions
            .grants
            .get(&grant)
            .map(|g| (g.doomed, g.contained, g.owner))
        else {
            // A grant the guardian no longer knows: its holders were all reaped,
            // so this child can only hold wiped secrets. Kill it.
            if let Ok(process) = self.os.open(child) {
                let _ = process.kill();
            }
            return;
        };
        let process = match self.needs_handle(contained, owner) {
            true => match self.os.open(child) {
                Ok(process) => Some(process),
                // A child that already exited needs no kill.
                Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return,
                // One that cannot be tracked (out of descriptors) would
                // outlive its secrets: they go now (fail closed).
                Err(err) => {
                    tracing::error!(%err, %child, "cannot track a holder's child; wiping its grant");
                    let keys = self.sessions.secrets_of(grant);
                    self.trigger(Cause::HolderUntracked, self.os.now_ns(), keys, None);
                    return;
                }
            },
            false => None,
        };
        if doomed {
            match &process {
                Some(process) => drop(process.kill()),
                None => drop(self.kill_containers(&HashSet::from([grant]))),
            }
            for trigger in self
                .triggers
                .iter_mut()
                .filter(|t| t.grants.contains(&grant))
            {
                trigger.killed += 1;
            }
        }
        self.track_holder(child, grant, process);
    }

    /// A holder exited (reported by the kernel, or by its exit watcher).
    pub(super) fn holder_exited(&mut self, pid: Pid, ktime_ns: u64) {
        // With eBPF the exit program has already taken it out of the map.
        let Some((grant, emptied)) = self.sessions.remove_holder(pid) else {
            return;
        };
        if emptied {
            self.retire_grant(grant);
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
}
