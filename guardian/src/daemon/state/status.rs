//! The `status` report: which protections are in force, and counts.

#![forbid(unsafe_code)]

use std::collections::HashSet;

use guardian_ebpf::TAMPER_BURST;

use super::{
    Core,
    os::{KernelMaps, Os},
};
use crate::{
    os::{
        hardening::Protections,
        process::{Pid, Uid},
        secret_mem,
    },
    protocol::{
        Containment, FailClosed, ForkTracking, ReadPaths, StatusInfo, TamperLimit,
        TamperProtection, WatchMode,
    },
};

impl<O: Os> Core<O> {
    /// The report as `viewer` may see it: the counts are all of them for
    /// root, and only the viewer's own for anyone else.
    pub(super) fn status(&self, viewer: Uid) -> StatusInfo {
        let hardening = self.os.hardening();
        let counts = match viewer.0 {
            0 => self.counts_for_root(),
            _ => self.counts_for(viewer),
        };
        let ebpf = self.kernel.is_some();
        StatusInfo {
            pid: self.os.guardian().raw(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self
                .os
                .now()
                .saturating_duration_since(self.started)
                .as_secs(),
            socket: self.paths.socket.display().to_string(),
            audit_log: self.paths.audit_log.display().to_string(),
            watch_mode: match ebpf {
                true => WatchMode::EbpfTracepoints,
                false => WatchMode::PidfdFallback,
            },
            ebpf_error: self.kernel_error.clone(),
            fork_tracking: match ebpf {
                true => ForkTracking::Ebpf,
                false => ForkTracking::ProcScan,
            },
            containment: match self.cgroups.is_some() {
                true => Containment::Cgroup,
                false => Containment::Pidfd,
            },
            fail_closed: match self.supervisor.is_some() {
                true => FailClosed::Supervisor,
                false => FailClosed::None,
            },
            tamper_protection: match &self.kernel {
                Some(link) if link.lsm_error().is_none() => TamperProtection::BpfLsmTracepoints,
                Some(_) => TamperProtection::EbpfTracepoints,
                None => TamperProtection::None,
            },
            lsm_error: self
                .kernel
                .as_ref()
                .and_then(|link| link.lsm_error().map(str::to_owned)),
            lock_watch_error: self.lock_watch.clone(),
            early_kill_error: match &self.kernel {
                Some(link) => link.early_kill_error().map(str::to_owned),
                None => Some("eBPF is not loaded".to_owned()),
            },
            read_paths: self
                .kernel
                .as_ref()
                .map(KernelMaps::read_paths)
                .unwrap_or_else(|| ReadPaths {
                    stopped: Vec::new(),
                    open: vec!["all: eBPF is not loaded (see eBPF unavailable)".to_owned()],
                }),
            // For another user, armed only over something of its own, so
            // the flag says nothing of others' secrets.
            tamper_armed: self.kernel.as_ref().is_some_and(KernelMaps::is_armed)
                && (viewer == Uid::ROOT
                    || counts.secrets > 0
                    || counts.holders > 0
                    || counts.leaders > 0),
            memory_backend: secret_mem::backing(),
            client_pinning: crate::os::peer::pinning(),
            locked_bytes: counts.locked_bytes,
            secrets: counts.secrets,
            leaders: counts.leaders,
            holders: counts.holders,
            dropped_events: self.dropped_seen,
            holder_events_lost: self.holder_lost_seen,
            tamper_limit: TamperLimit {
                records_per_uid_per_second: TAMPER_BURST,
                suppressed: counts.suppressed,
                lost: counts.lost,
            },
            audit_flushes: (viewer == Uid::ROOT).then(|| self.os.audit_flushes()),
            hardening: Protections {
                // It grows with every user's secrets.
                locked_kib: hardening.locked_kib.filter(|_| viewer == Uid::ROOT),
                ..hardening
            },
        }
    }

    fn counts_for_root(&self) -> Counts {
        let suppressed = self.kernel.as_ref().map_or(0, |kernel| {
            kernel.tamper_suppressed().iter().map(|&(_, n)| n).sum()
        });
        Counts {
            locked_bytes: secret_mem::locked_bytes(),
            secrets: self.vault.len(),
            leaders: self.sessions.leaders.len(),
            holders: self.sessions.holders.len(),
            suppressed,
            lost: self.kernel.as_ref().map_or(0, KernelMaps::tamper_lost),
        }
    }

    fn counts_for(&self, uid: Uid) -> Counts {
        let bound = self.vault.owned_by(uid).map(|(_, secret)| secret.leader);
        let guarded = self
            .sessions
            .leaders
            .iter()
            .filter(|(_, leader)| leader.owner == uid)
            .map(|(&pid, _)| pid);
        let leaders: HashSet<Pid> = bound.chain(guarded).collect();
        let holders = self
            .sessions
            .holders
            .values()
            .filter(|holder| {
                let grant = self.sessions.grants.get(&holder.grant);
                grant.is_some_and(|grant| grant.owner == uid)
            })
            .count();
        let suppressed = self.kernel.as_ref().map_or(0, |kernel| {
            let own = kernel
                .tamper_suppressed()
                .into_iter()
                .find(|&(u, _)| u == uid);
            own.map_or(0, |(_, n)| n)
        });
        Counts {
            locked_bytes: self.budget.used(uid),
            secrets: self.vault.owned_by(uid).count(),
            leaders: leaders.len(),
            holders,
            suppressed,
            lost: 0,
        }
    }
}

/// The counts in a status report, as one viewer may see them.
struct Counts {
    locked_bytes: usize,
    secrets: usize,
    leaders: usize,
    holders: usize,
    suppressed: u64,
    lost: u64,
}
