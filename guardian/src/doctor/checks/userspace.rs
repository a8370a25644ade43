//! The userspace checks: procps's `ps`, which may read every environment,
//! and the guardian itself, in which mode it runs.

#![forbid(unsafe_code)]

use super::{Check, Guardian, Verdict, kernel::bpf_listed};
use crate::{doctor::host::Facts, protocol::TamperProtection};

/// procps's `ps`, which may read every process's environment.
pub(in crate::doctor) fn procps(facts: &Facts, guardian: &Guardian) -> Check {
    const NAME: &str = "procps";
    let procps = match &facts.procps {
        None => return Check::new(NAME, Verdict::Ok, "no ps here"),
        Some(None) => {
            return Check::new(NAME, Verdict::Ok, "ps here is not procps-ng's; not checked");
        }
        Some(Some(procps)) => procps,
    };
    let version = procps
        .version
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let named = format!("{} {version}", procps.flavour);
    if !procps.reads_every_environ() {
        return Check::new(
            NAME,
            Verdict::Ok,
            format!("{named} reads another process's environment only when asked (ps e)"),
        );
    }
    let reads = format!(
        "{named} reads every process's /proc/PID/environ on every ps: harmless for exec --file \
         holders and environments that hold no secret; an exec --env holder's, read from \
         outside its session,"
    );
    match guardian.tamper_protection() {
        Some(TamperProtection::BpfLsmTracepoints) => Check::new(
            NAME,
            Verdict::Ok,
            format!("{reads} is denied (EACCES) and recorded, and ps carries on"),
        ),
        Some(TamperProtection::EbpfTracepoints) => Check::new(
            NAME,
            Verdict::Ok,
            format!("{reads} is stopped before its first byte by SIGKILL of that ps, and recorded"),
        )
        .fix([
            "prefer exec --file, or make BPF LSM active (bpf-lsm), where such a ps is only \
             refused"
                .to_owned(),
        ]),
        Some(TamperProtection::None) => Check::new(
            NAME,
            Verdict::Weaker,
            format!("{reads} is not stopped: the guardian runs without eBPF"),
        )
        .fix(["prefer exec --file; run the guardian with its eBPF programs".to_owned()]),
        None => Check::new(
            NAME,
            Verdict::Ok,
            format!(
                "{reads} is denied (EACCES) where BPF LSM is active, else stopped by SIGKILL of \
                 that ps, and recorded"
            ),
        ),
    }
}

/// Whether the guardian runs, and in which mode.
pub(in crate::doctor) fn guardian(facts: &Facts, guardian: &Guardian) -> Check {
    const NAME: &str = "guardian";
    let status = match guardian {
        Guardian::NotReached(why) => {
            return Check::new(NAME, Verdict::Missing, format!("not reached: {why}"));
        }
        Guardian::Running(status) => status,
    };
    let running = format!(
        "running (pid {}, version {}), tamper protection {}",
        status.pid, status.version, status.tamper_protection
    );
    match status.tamper_protection {
        TamperProtection::BpfLsmTracepoints => Check::new(
            NAME,
            Verdict::Ok,
            format!(
                "{running}, the strongest: ptrace, process_vm_* and opens of a ward's mem or \
                 environ are refused by BPF LSM"
            ),
        ),
        TamperProtection::EbpfTracepoints => Check::new(
            NAME,
            Verdict::Weaker,
            format!(
                "{running}: tampering is stopped by SIGKILL at syscall entry, not refused; \
                 BPF LSM unused: {}",
                status.lsm_error.as_deref().unwrap_or("no reason given")
            ),
        )
        .fix([match bpf_listed(facts) {
            true => "bpf is in the active LSM list, yet the kernel refused the guardian's BPF \
                     LSM programs (the reason above), so the bpf-lsm line's fix does not apply; \
                     the guardian's log at RUST_LOG=debug says more"
                .to_owned(),
            false => "make BPF LSM active (bpf-lsm), then restart the guardian \
                      (systemctl restart ningen-shikkaku)"
                .to_owned(),
        }]),
        TamperProtection::None => Check::new(
            NAME,
            Verdict::Missing,
            format!(
                "{running}: no eBPF ({}), so no read path into a session is stopped",
                status
                    .ebpf_error
                    .as_deref()
                    .unwrap_or("started with --no-ebpf")
            ),
        )
        .fix(["start the guardian with its eBPF programs (as root, without --no-ebpf)".to_owned()]),
    }
}
