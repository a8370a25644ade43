//! Triggers: wipe, then kill, then record. A trigger wipes its secrets at
//! once, kills every holder of any of them, and stays pending until those
//! holders are dead (re-signalling them every [`RECHECK`]) or
//! [`HOLDER_DEATH_WAIT`] has passed; then its record, with the latencies
//! measured on the kernel clock, goes to the audit log.

#![forbid(unsafe_code)]

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use guardian_ebpf::HolderState;

use super::{
    Core, Msg, SecretKey,
    os::{Containment, KernelMaps, Os, Process},
    sessions::GrantId,
};
use crate::{
    audit::{Action, Entry, Latency, Outcome},
    os::process::Pid,
};

/// How long a trigger waits for holders to die before recording that some survived.
pub(super) const HOLDER_DEATH_WAIT: Duration = Duration::from_secs(5);
/// How often a pending trigger re-signals its surviving holders.
pub(super) const RECHECK: Duration = Duration::from_millis(100);
/// Holders with handles in just-killed cgroups past which reading who is
/// left in those cgroups (so that only a holder that left its cgroup is
/// signalled) costs less than signalling each: a read of `cgroup.procs`
/// costs about as much CPU as this many signals, CPU the dying holders need.
pub(super) const SIGNALS_WORTH_A_READ: usize = 32;
/// How often draining grants are looked at while no trigger is pending.
pub(super) const SWEEP: Duration = Duration::from_secs(1);

text_enum! {
    /// Why secrets were wiped, as the trigger's record gives it.
    pub enum Cause {
        /// The session leader exited.
        LeaderExit = "leader_exit",
        /// The session leader was sent SIGHUP.
        LeaderHangup = "leader_hangup",
        /// The owner revoked the secret.
        Revoke = "revoke",
        /// The owner replaced the secret's value: the old value's holders die.
        Replace = "replace",
        /// logind locked the session the leader is in.
        SessionLocked = "session_locked",
        /// The machine is about to suspend.
        Suspend = "suspend",
        /// The secret's TTL ran out.
        TtlExpired = "ttl_expired",
        /// The guardian was told to stop.
        Shutdown = "shutdown",
        /// The ring buffer overflowed: events the guardian must act on may be lost.
        KernelEventsLost = "kernel_events_lost",
        /// A holder was ptraced or read.
        Tamper = "tamper",
        /// `wipe --all`.
        WipeAll = "wipe_all",
        /// The supervisor died.
        SupervisorLost = "supervisor_lost",
        /// A holder's child could not be tracked (the guardian was out of
        /// descriptors), so it would have outlived its secrets.
        HolderUntracked = "holder_untracked",
        /// A stored secret's record could not be made durable, so the store
        /// is undone.
        AuditUnavailable = "audit_unavailable",
    }
}

/// A trigger whose secrets are wiped and whose holders are being killed.
pub(super) struct PendingTrigger {
    cause: Cause,
    names: Vec<String>,
    leader: Option<Pid>,
    start_ns: u64,
    wiped_ns: u64,
    /// The grants whose holders must die.
    pub(super) grants: HashSet<GrantId>,
    /// Holders signalled so far.
    pub(super) killed: usize,
    /// When the last of them died (kernel clock).
    pub(super) last_dead_ns: u64,
    deadline: Instant,
}

impl<O: Os> Core<O> {
    /// A leader exited or was hung up: wipe what is bound to it. Its
    /// session is guarded until the leader has exited: a hangup leaves it
    /// alive, with its shell's memory and whoever caused the hangup.
    pub(super) fn leader_gone(&mut self, leader: Pid, cause: Cause, start_ns: u64) {
        if !self.sessions.leaders.contains_key(&leader) {
            return;
        }
        let keys = self.vault.bound_to(leader);
        self.trigger(cause, start_ns, keys, Some(leader));
        match cause {
            Cause::LeaderHangup => {
                if let Some(watched) = self.sessions.leaders.get_mut(&leader) {
                    watched.hung_up = true;
                }
            }
            _ => self.unwatch_leader(leader),
        }
    }

    /// Wipes every secret of every user (fail closed).
    pub(super) fn wipe_everything(&mut self, cause: Cause) {
        let keys = self.vault.keys();
        self.trigger(cause, self.os.now_ns(), keys, None);
    }

    /// Wipes `keys`, then kills every holder of any of them. Returns the number
    /// of holders signalled. The leaders stay watched, their sessions
    /// guarded, until they exit: a wipe by a tamper, a revoke or a TTL leaves
    /// the shell alive with the value still in its memory, and whoever
    /// caused it still there.
    pub(super) fn trigger(
        &mut self,
        cause: Cause,
        start_ns: u64,
        keys: Vec<SecretKey>,
        leader: Option<Pid>,
    ) -> usize {
        let mut names = Vec::new();
        for key in &keys {
            self.retire(key);
            if self.vault.wipe(key) {
                names.push(key.name.to_string());
            }
        }
        self.kill_holders(cause, start_ns, &keys, names, leader)
    }

    /// The value under `key` is about to go while its leader may live on:
    /// the leader's owner's environments are still searched for it
    /// (`retired.rs`). Only the owner's own values, as for values held.
    pub(super) fn retire(&mut self, key: &SecretKey) {
        let Some(secret) = self.vault.get(key) else {
            return;
        };
        let leader = self.sessions.leaders.get_mut(&secret.leader);
        if let Some(leader) = leader.filter(|leader| leader.owner == key.owner) {
            leader.retired.retire(secret.bytes.as_slice());
        }
    }

    /// Kills every holder of any of `keys` (whose values are gone: wiped, or
    /// replaced) and follows their deaths to the trigger's record, which
    /// names `names` as wiped. Returns the number of holders signalled.
    pub(super) fn kill_holders(
        &mut self,
        cause: Cause,
        start_ns: u64,
        keys: &[SecretKey],
        names: Vec<String>,
        leader: Option<Pid>,
    ) -> usize {
        let wiped_ns = self.os.now_ns();
        let keys: HashSet<SecretKey> = keys.iter().cloned().collect();
        let mut grants = self.sessions.doom_grants_of(&keys);
        // One cause, one record: a grant already dying for a pending trigger
        // (a second attempt by the same attacker, caught before its first
        // was answered) is followed to its end by that trigger alone.
        grants.retain(|grant| !self.triggers.iter().any(|t| t.grants.contains(grant)));
        if names.is_empty() && grants.is_empty() {
            return 0; // nothing was held: nothing to wipe, kill or record
        }
        // Their files too are wiped before anyone is killed.
        self.wipe_files(&grants);
        let killed = self.kill_grants(&grants);
        tracing::info!(%cause, ?names, killed, "secrets wiped");
        self.triggers.push(PendingTrigger {
            cause,
            names,
            leader,
            start_ns,
            wiped_ns,
            grants,
            killed,
            last_dead_ns: 0,
            deadline: self.os.now() + HOLDER_DEATH_WAIT,
        });
        self.check_triggers();
        killed
    }

    /// SIGKILLs every holder in `grants`. Without eBPF fork tracking, holders'
    /// descendants are found by a scan of /proc and killed too.
    fn kill_grants(&mut self, grants: &HashSet<GrantId>) -> usize {
        if grants.is_empty() {
            return 0;
        }
        let holders = self.sessions.holders_in(grants);
        // Kill first: the dying processes need the CPU more than the map does.
        let contained = self.kill_containers(grants);
        let handles = holders
            .iter()
            .filter(|(_, grant, process)| process.is_some() && contained.contains(grant))
            .count();
        let inside = match handles > SIGNALS_WORTH_A_READ {
            true => self.members_of(&contained),
            false => HashSet::new(),
        };
        for (pid, grant, process) in &holders {
            let killed = match process {
                // Killed with its cgroup, which it was in after the kill.
                Some(_) if inside.contains(pid) => Ok(()),
                Some(process) => process.kill(),
                None if contained.contains(grant) => Ok(()),
                // Its cgroup could not be killed: a handle now is the best left.
                None => self.os.open(*pid).and_then(|process| process.kill()),
            };
            if let Err(err) = killed {
                tracing::warn!(%pid, %err, "cannot kill holder");
            }
        }
        if let Some(kernel) = &mut self.kernel {
            // cgroup.kill also kills what its cgroup is forking. Elsewhere the
            // kernel must kill a child born to a doomed holder, for a fork
            // already past its fatal-signal check.
            for (pid, grant, _) in holders.iter().filter(|(_, g, _)| !contained.contains(g)) {
                // Best effort: a full map only loses the in-kernel fork kill.
                let _ = kernel.set_holder(*pid, *grant, HolderState::Doomed);
            }
        }
        let mut killed = holders.len();
        if self.kernel.is_none() && self.cgroups.is_none() {
            let roots: HashSet<Pid> = holders.iter().map(|(pid, _, _)| *pid).collect();
            let grant = grants.iter().next().copied().unwrap_or_default();
            for pid in self.os.descendants_of(&roots) {
                if let Ok(process) = self.os.open(pid) {
                    let _ = process.kill();
                    self.track_holder(pid, grant, Some(process));
                    killed += 1;
                }
            }
        }
        killed
    }

    /// Kills the container of each grant; returns the grants so contained.
    pub(super) fn kill_containers(&self, grants: &HashSet<GrantId>) -> HashSet<GrantId> {
        let mut contained = HashSet::new();
        let Some(cgroups) = &self.cgroups else {
            return contained;
        };
        for &grant in grants {
            match cgroups.kill(grant) {
                Ok(true) => _ = contained.insert(grant),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(grant, %err, "cgroup.kill failed; killing holders one by one")
                }
            }
        }
        contained
    }

    /// Who is in the containers of `grants`, read after they were killed: a
    /// holder there had SIGKILL from the kill, so a handle need not signal
    /// it again (a hundred dying holders need the CPU more). One that is not
    /// there (root's holders can leave their cgroup) is signalled by its
    /// handle; a cgroup that cannot be read counts as empty, so all of its
    /// holders are.
    fn members_of(&self, grants: &HashSet<GrantId>) -> HashSet<Pid> {
        let Some(cgroups) = &self.cgroups else {
            return HashSet::new();
        };
        grants
            .iter()
            .filter_map(|&grant| cgroups.members(grant).ok())
            .flatten()
            .collect()
    }

    /// Records every trigger whose holders are all dead, or that waited too
    /// long. Runs at each holder's exit, so it reads a cgroup only once no
    /// known holder is left.
    pub(super) fn check_triggers(&mut self) {
        let now = self.os.now();
        let mut index = 0;
        while index < self.triggers.len() {
            let trigger = &self.triggers[index];
            // Holders the guardian never learnt of (their forks lost, or made
            // without eBPF) are still seen in their cgroup.
            let done = !self.sessions.any_holder_in(&trigger.grants)
                && !self.any_populated(&trigger.grants);
            if done || now >= trigger.deadline {
                let trigger = self.triggers.swap_remove(index);
                self.record_trigger(&trigger, done);
            } else {
                index += 1;
            }
        }
        self.forget_unwatched_wards();
        self.schedule_tick();
    }

    /// Signals the known survivors of pending triggers again (a no-op for
    /// the dying). At each tick, not at each exit: a hundred holders with
    /// handles would cost five thousand signals while they die.
    pub(super) fn signal_survivors(&self) {
        for trigger in &self.triggers {
            self.sessions
                .holders_in(&trigger.grants)
                .iter()
                .filter_map(|(_, _, process)| process.as_ref())
                .for_each(|process| drop(process.kill()));
        }
    }

    /// At each tick, kills again the cgroups of pending triggers that still
    /// hold processes: holders without a handle, and any the guardian never
    /// learnt of. (Not at each exit: a cgroup.kill signals the whole tree.)
    pub(super) fn kill_pending_containers(&self) {
        let Some(cgroups) = &self.cgroups else {
            return;
        };
        let populated: HashSet<GrantId> = self
            .triggers
            .iter()
            .flat_map(|trigger| trigger.grants.iter().copied())
            .filter(|&grant| cgroups.populated(grant))
            .collect();
        self.kill_containers(&populated);
    }

    /// True while a live process is left in the cgroup of any of `grants`.
    fn any_populated(&self, grants: &HashSet<GrantId>) -> bool {
        self.cgroups
            .as_ref()
            .is_some_and(|cgroups| grants.iter().any(|&grant| cgroups.populated(grant)))
    }

    /// Makes sure a tick comes: every [`RECHECK`] while triggers wait for
    /// holders to die, every [`SWEEP`] while grants drain, never when idle.
    pub(super) fn schedule_tick(&mut self) {
        let every = match (self.triggers.is_empty(), self.draining.is_empty()) {
            (false, _) => RECHECK,
            (true, false) => SWEEP,
            (true, true) => return,
        };
        if self.tick.as_ref().is_none_or(|(_, due)| *due > every) {
            self.tick = Some((self.os.after(every, Msg::Tick), every));
        }
    }

    /// Records a trigger; `done` when every holder was seen dead.
    fn record_trigger(&mut self, trigger: &PendingTrigger, done: bool) {
        let holders_dead_ns = (trigger.killed > 0 && done)
            .then(|| trigger.last_dead_ns.saturating_sub(trigger.start_ns));
        self.record(Entry {
            action: Action::Trigger,
            names: trigger.names.clone(),
            peer: None,
            leader: trigger.leader.map(Pid::raw),
            outcome: match done {
                true => Outcome::Wiped,
                false => Outcome::HoldersSurvived,
            },
            reason: Some(trigger.cause.to_string()),
            latency: Some(Latency {
                start_ns: trigger.start_ns,
                wiped_ns: trigger.wiped_ns.saturating_sub(trigger.start_ns),
                holders_dead_ns,
                holders: trigger.killed,
            }),
        });
    }
}
