//! The LSM and kernel checks: whether BPF LSM runs, which system-call
//! tables the guardian sees, and what the kernel's version gives it
//! (`SO_PEERPIDFD`, `bpf_send_signal_task`).

#![forbid(unsafe_code)]

use super::{Check, Guardian, Verdict};
use crate::{
    cli::DEFAULT_CONFIG,
    doctor::{host::Facts, parse::KernelVersion},
    os::peer::Pinning,
    protocol::{TamperProtection, UNWATCHED_TABLES},
};

/// The first kernel with `SO_PEERPIDFD`.
const PEER_PIDFD: KernelVersion = KernelVersion::new(6, 5);
/// The first kernel with `bpf_send_signal_task`.
const SEND_SIGNAL_TASK: KernelVersion = KernelVersion::new(6, 13);

/// How to boot with `lsm=` set to `list`.
pub(super) fn lsm_fix(list: &str) -> Vec<String> {
    vec![
        format!("boot with lsm={list} on the kernel command line (in place of any lsm= there):"),
        format!(
            "Debian/Ubuntu: add lsm={list} to GRUB_CMDLINE_LINUX in /etc/default/grub, \
             run update-grub, reboot"
        ),
        format!("Fedora: grubby --update-kernel=ALL --args=lsm={list}, reboot"),
    ]
}

/// BPF LSM: `bpf` in the active LSM list.
pub(in crate::doctor) fn bpf_lsm(facts: &Facts, guardian: &Guardian) -> Check {
    const NAME: &str = "bpf-lsm";
    let Some((list, source)) = &facts.lsms else {
        return Check::new(
            NAME,
            Verdict::Weaker,
            "cannot tell: /sys/kernel/security/lsm is unreadable, /proc/cmdline names no lsm= \
             and there is no kernel config in /boot to read CONFIG_LSM from",
        )
        .fix(["run ningen-shikkaku doctor as root, which can read securityfs".to_owned()]);
    };
    let shown = list.join(",");
    if list.iter().any(|lsm| lsm == "bpf") {
        let active = format!(
            "active: bpf is in the LSM list {shown} (read from {})",
            source.said()
        );
        // The list is what the kernel booted with; only a load says whether
        // it takes the guardian's programs (a kernel may refuse them still).
        return match guardian
            .status()
            .and_then(|status| status.lsm_error.as_deref())
        {
            None => Check::new(NAME, Verdict::Ok, active),
            Some(err) => Check::new(
                NAME,
                Verdict::Weaker,
                format!("{active}, but the running guardian's LSM programs did not load: {err}"),
            ),
        };
    }
    let wanted = format!("{shown},bpf");
    let found = format!(
        "not active: bpf is not in the LSM list {shown} (read from {}); without it the \
         guardian stops tampering by SIGKILL at syscall entry rather than refusing it",
        source.said()
    );
    let fix = match &facts.bpf_lsm_config {
        Some((path, built)) if built == "y" => {
            let mut fix = lsm_fix(&wanted);
            fix[0] = format!(
                "this kernel is built with CONFIG_BPF_LSM=y ({}): {}",
                path.display(),
                fix[0]
            );
            fix
        }
        Some((path, _)) => vec![format!(
            "this kernel is built without CONFIG_BPF_LSM ({}): boot one built with it \
             (Debian's, Ubuntu's and Fedora's are), with lsm={wanted}",
            path.display()
        )],
        None => {
            let mut fix = lsm_fix(&wanted);
            fix[0] = format!(
                "if this kernel is built with CONFIG_BPF_LSM=y (there is no /boot/config-{} to \
                 tell): {}",
                facts.release.as_deref().unwrap_or("RELEASE"),
                fix[0]
            );
            fix
        }
    };
    Check::new(NAME, Verdict::Missing, found).fix(fix)
}

/// Which system-call tables the guardian sees (`kernel::syscalls`): BPF LSM
/// hooks see every one; without them, the per-call tracepoints of
/// `watch_32_bit_syscalls = false` see the 64-bit table only, and
/// `raw_syscalls:sys_exit` (`true`) every table, at a cost.
pub(in crate::doctor) fn syscall_tables(facts: &Facts, guardian: &Guardian) -> Check {
    const NAME: &str = "syscall-tables";
    let unseen = "32-bit and x32 system calls (int 0x80) go unseen: a ptrace attach (registers, \
                  not memory), pidfd_getfd, perf_event_open, the open of a secret file, a \
                  holder's change of uid (setuid); their memory reads are still stopped at the \
                  address-space lock";
    let fix = || {
        [
            "make BPF LSM active (see bpf-lsm), then restart the guardian \
             (systemctl restart ningen-shikkaku): its LSM hooks see every table"
                .to_owned(),
            format!(
                "or set watch_32_bit_syscalls = true in {DEFAULT_CONFIG} and restart the \
                 guardian: a program then runs on every system call of the machine \
                 (raw_syscalls:sys_exit), which costs syscall-heavy work about a quarter of its \
                 speed while a secret is held"
            ),
        ]
    };
    let Some(status) = guardian.status() else {
        // As for early-kill, the host says what a guardian started here
        // would do; only its status says which tables it watches.
        return match &facts.lsms {
            Some(_) if bpf_listed(facts) => Check::new(
                NAME,
                Verdict::Ok,
                "possible (bpf is in the active LSM list; the guardian loads its BPF LSM \
                 programs when it starts): BPF LSM hooks see every system-call table",
            ),
            lsms => {
                let without = match lsms {
                    Some(_) => "bpf is not in the active LSM list",
                    None => "BPF LSM may not be active (see bpf-lsm)",
                };
                Check::new(
                    NAME,
                    Verdict::Weaker,
                    format!(
                        "{without}, so a guardian started here watches the 64-bit table \
                         only unless watch_32_bit_syscalls = true (its status says which once \
                         it runs); with the 64-bit table only, {unseen}"
                    ),
                )
                .fix(fix())
            }
        };
    };
    match status.tamper_protection {
        TamperProtection::BpfLsmTracepoints => Check::new(
            NAME,
            Verdict::Ok,
            "BPF LSM hooks see every system-call table",
        ),
        TamperProtection::EbpfTracepoints
            if status
                .read_paths
                .open
                .iter()
                .any(|path| path.starts_with(UNWATCHED_TABLES)) =>
        {
            Check::new(
                NAME,
                Verdict::Weaker,
                format!(
                    "the running guardian watches the 64-bit table only \
                     (watch_32_bit_syscalls = false): {unseen}"
                ),
            )
            .fix(fix())
        }
        // The kernel's layout unread: the programs judge nothing at all.
        TamperProtection::EbpfTracepoints if status.read_paths.stopped.is_empty() => Check::new(
            NAME,
            Verdict::Weaker,
            "no table watched: the running guardian could not arm its read-path programs (see \
             its status, read path OPEN)",
        ),
        TamperProtection::EbpfTracepoints => Check::new(
            NAME,
            Verdict::Ok,
            "every table watched (watch_32_bit_syscalls = true)",
        ),
        TamperProtection::None => Check::new(
            NAME,
            Verdict::Weaker,
            format!(
                "no table watched: the running guardian has no eBPF ({}), so no system call \
                 is judged (see guardian)",
                status
                    .ebpf_error
                    .as_deref()
                    .unwrap_or("started with --no-ebpf")
            ),
        )
        .fix(["run the guardian with its eBPF programs (not --no-ebpf)".to_owned()]),
    }
}

/// The kernel's release.
pub(in crate::doctor) fn kernel(facts: &Facts) -> Check {
    const NAME: &str = "kernel";
    match (&facts.release, facts.version) {
        (Some(release), Some(version)) if version >= SEND_SIGNAL_TASK => Check::new(
            NAME,
            Verdict::Ok,
            format!(
                "{release}: {SEND_SIGNAL_TASK} or newer, with SO_PEERPIDFD and bpf_send_signal_task"
            ),
        ),
        (Some(release), Some(_)) => Check::new(
            NAME,
            Verdict::Weaker,
            format!("{release}: older than {SEND_SIGNAL_TASK}, the guardian falls back as below"),
        )
        .fix([format!(
            "a {SEND_SIGNAL_TASK} or newer kernel has everything"
        )]),
        (release, _) => Check::new(
            NAME,
            Verdict::Weaker,
            format!(
                "cannot tell the version of {:?} (/proc/sys/kernel/osrelease)",
                release.as_deref().unwrap_or("")
            ),
        ),
    }
}

/// `SO_PEERPIDFD`, with which the guardian pins each client (`os::peer`):
/// the running guardian's `status` says which pinning it uses; without one,
/// the kernel's version says which it would.
pub(in crate::doctor) fn peer_pidfd(facts: &Facts, guardian: &Guardian) -> Check {
    const NAME: &str = "peer-pidfd";
    let pinning = match (guardian.status(), facts.version) {
        (Some(status), _) => status.client_pinning,
        (None, Some(version)) if version >= PEER_PIDFD => Pinning::PeerPidfd,
        (None, _) => Pinning::PidfdAtAccept,
    };
    match pinning {
        Pinning::PeerPidfd => Check::new(
            NAME,
            Verdict::Ok,
            format!(
                "SO_PEERPIDFD ({PEER_PIDFD}+): the guardian pins each client by the pidfd its \
                 socket gives, so a reused pid is never taken for it"
            ),
        ),
        Pinning::PidfdAtAccept => Check::new(
            NAME,
            Verdict::Weaker,
            format!(
                "no SO_PEERPIDFD (before {PEER_PIDFD}): the guardian takes a client's pid from \
                 SO_PEERCRED and opens a pidfd on it at accept, which cannot see the pid \
                 reused between connect and accept"
            ),
        )
        .fix([format!("a {PEER_PIDFD} or newer kernel")]),
    }
}

/// The kernel's own kill of a leader's newest holder (`kernel::early_kill`).
pub(in crate::doctor) fn early_kill(facts: &Facts, guardian: &Guardian) -> Check {
    const NAME: &str = "early-kill";
    let fix = || {
        [format!(
            "a {SEND_SIGNAL_TASK} or newer kernel (bpf_send_signal_task)"
        )]
    };
    let on = "the kernel SIGKILLs a leader's newest holder at the leader's exit itself, \
              before the guardian wakes";
    let off = "holders are killed by the guardian alone once it wakes (all of them still are)";
    match (guardian.status(), facts.version) {
        (Some(status), _) => match &status.early_kill_error {
            None => Check::new(NAME, Verdict::Ok, format!("on: {on}")),
            Some(err) => {
                let check = Check::new(NAME, Verdict::Weaker, format!("off ({err}): {off}"));
                match facts.version {
                    Some(version) if version >= SEND_SIGNAL_TASK => check,
                    _ => check.fix(fix()),
                }
            }
        },
        (None, Some(version)) if version >= SEND_SIGNAL_TASK => Check::new(
            NAME,
            Verdict::Ok,
            format!(
                "possible ({SEND_SIGNAL_TASK}+, bpf_send_signal_task; the guardian checks the \
                 kernel's BTF when it starts): {on}"
            ),
        ),
        (None, _) => Check::new(
            NAME,
            Verdict::Weaker,
            format!("off: no bpf_send_signal_task before {SEND_SIGNAL_TASK}; {off}"),
        )
        .fix(fix()),
    }
}

/// True when the LSM list read names `bpf`.
pub(super) fn bpf_listed(facts: &Facts) -> bool {
    facts
        .lsms
        .as_ref()
        .is_some_and(|(list, _)| list.iter().any(|lsm| lsm == "bpf"))
}
