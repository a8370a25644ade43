//! The `status` report: which protections are in force, and counts.

#![forbid(unsafe_code)]

use super::{
    Core,
    os::{KernelMaps, Os},
};
use crate::{
    os::secret_mem,
    protocol::{
        Containment, FailClosed, ForkTracking, ReadPaths, StatusInfo, TamperProtection, WatchMode,
    },
};

impl<O: Os> Core<O> {
    pub(super) fn status(&self) -> StatusInfo {
        let ebpf = self.kernel.is_some();
        StatusInfo {
            pid: self.os.guardian().raw(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
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
            read_paths: self
                .kernel
                .as_ref()
                .map(KernelMaps::read_paths)
                .unwrap_or_else(|| ReadPaths {
                    stopped: Vec::new(),
                    open: vec!["all: eBPF is not loaded (see eBPF unavailable)".to_owned()],
                }),
            tamper_armed: self.kernel.as_ref().is_some_and(KernelMaps::is_armed),
            memory_backend: secret_mem::backing(),
            locked_bytes: secret_mem::locked_bytes(),
            secrets: self.vault.len(),
            leaders: self.sessions.leaders.len(),
            holders: self.sessions.holders.len(),
            dropped_events: self.dropped_seen,
            hardening: self.os.hardening(),
        }
    }
}
