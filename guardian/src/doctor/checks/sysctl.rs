//! The sysctl checks: `kernel.io_uring_disabled`,
//! `kernel.yama.ptrace_scope`, `kernel.core_pattern` and
//! `dev.tty.legacy_tiocsti`, each judged with what the guardian does about
//! what it leaves open.

#![forbid(unsafe_code)]

use super::{Check, Guardian, Verdict};
use crate::{
    doctor::{
        host::Facts,
        parse::{CorePattern, KernelVersion},
    },
    protocol::WatchMode,
};

/// The first kernel with `kernel.io_uring_disabled`.
const IO_URING_DISABLED: KernelVersion = KernelVersion::new(6, 6);
/// The first kernel with `dev.tty.legacy_tiocsti`.
const LEGACY_TIOCSTI: KernelVersion = KernelVersion::new(6, 2);

/// `kernel.io_uring_disabled`.
pub(in crate::doctor) fn io_uring(facts: &Facts, guardian: &Guardian) -> Check {
    const NAME: &str = "io-uring";
    let stopped = guardian.status().is_some_and(|status| {
        status.watch_mode == WatchMode::EbpfTracepoints
            && status
                .read_paths
                .stopped
                .iter()
                .any(|path| path.contains("io_uring"))
    });
    let by_guardian = match (stopped, guardian.status()) {
        (true, _) => "; the guardian's programs stop its opens and reads of a ward here",
        (false, Some(_)) => {
            "; the guardian's programs cannot stop its reads of a ward here (see status)"
        }
        (false, None) => {
            "; whether the guardian's programs stop its reads of a ward here, \
                          status says once it runs"
        }
    };
    let sysctl = || {
        ["sysctl -w kernel.io_uring_disabled=2; to keep it: \
             echo kernel.io_uring_disabled=2 > /etc/sysctl.d/60-io-uring.conf"
            .to_owned()]
    };
    let verdict = match stopped {
        true => Verdict::Ok,
        false => Verdict::Weaker,
    };
    match facts.io_uring_disabled {
        Some(2) => Check::new(
            NAME,
            Verdict::Ok,
            "2: io_uring is disabled for every process",
        ),
        Some(value) => {
            let who = match value {
                0 => "every process",
                _ => "root and the kernel.io_uring_group",
            };
            let check = Check::new(
                NAME,
                verdict,
                format!("{value}: io_uring is open to {who}{by_guardian}"),
            );
            match stopped {
                true => check,
                false => check.fix(sysctl()),
            }
        }
        None => {
            let check = Check::new(
                NAME,
                verdict,
                format!(
                    "no kernel.io_uring_disabled: the kernel is older than {IO_URING_DISABLED}, \
                     io_uring is open to every process{by_guardian}"
                ),
            );
            match stopped {
                true => check,
                false => check.fix([format!(
                    "a {IO_URING_DISABLED} or newer kernel, then kernel.io_uring_disabled=2"
                )]),
            }
        }
    }
}

/// Yama's `kernel.yama.ptrace_scope`.
pub(in crate::doctor) fn ptrace_scope(facts: &Facts) -> Check {
    const NAME: &str = "ptrace-scope";
    let guarded = "the guardian stops that for its wards only while it holds a secret for them";
    match facts.ptrace_scope {
        None => Check::new(
            NAME,
            Verdict::Missing,
            format!(
                "Yama is not active (no /proc/sys/kernel/yama/ptrace_scope): a process may \
                 ptrace any other of its uid and read its memory; {guarded}"
            ),
        )
        .fix([
            "put yama in the lsm= list on the kernel command line (as for bpf-lsm), on a \
             kernel built with CONFIG_SECURITY_YAMA"
                .to_owned(),
        ]),
        Some(0) => Check::new(
            NAME,
            Verdict::Weaker,
            format!("0: a process may ptrace any other of its uid and read its memory; {guarded}"),
        )
        .fix(["sysctl -w kernel.yama.ptrace_scope=1; to keep it: \
             echo kernel.yama.ptrace_scope=1 > /etc/sysctl.d/10-ptrace.conf"
            .to_owned()]),
        Some(1) => Check::new(
            NAME,
            Verdict::Ok,
            "1: a process may ptrace only its own descendants (or one that allowed it)",
        ),
        Some(2) => Check::new(
            NAME,
            Verdict::Ok,
            "2: only a process with CAP_SYS_PTRACE may ptrace",
        ),
        Some(value) => Check::new(
            NAME,
            Verdict::Ok,
            format!("{value}: no process may ptrace-attach"),
        ),
    }
}

/// `kernel.core_pattern`, and the core limits the guardian sets
/// (`os::hardening`).
pub(in crate::doctor) fn core_pattern(facts: &Facts, guardian: &Guardian) -> Check {
    const NAME: &str = "core-pattern";
    let own = "the guardian itself is non-dumpable with a core limit of 0";
    match &facts.core_pattern {
        None => Check::new(
            NAME,
            Verdict::Weaker,
            "cannot read /proc/sys/kernel/core_pattern",
        ),
        Some(CorePattern::File(pattern)) => Check::new(
            NAME,
            Verdict::Ok,
            format!(
                "a file ({pattern}): holders start with a core limit of 1, under a page, so the \
                 kernel writes them no core; {own}"
            ),
        ),
        Some(CorePattern::Piped(helper)) => {
            let found = format!(
                "piped to {helper}: holders start with a core limit of 1 (soft and hard), at \
                 which the kernel pipes no core"
            );
            let ebpf = guardian
                .status()
                .map(|status| status.watch_mode == WatchMode::EbpfTracepoints);
            match ebpf {
                Some(true) => Check::new(
                    NAME,
                    Verdict::Ok,
                    format!(
                        "{found}, and the guardian's eBPF SIGKILLs a holder about to dump core \
                         even if its uid lowered that limit to 0; {own}"
                    ),
                ),
                Some(false) => Check::new(
                    NAME,
                    Verdict::Weaker,
                    format!(
                        "{found}, but without the guardian's eBPF the same uid may lower a \
                         holder's limit to 0 and the helper then gets the dump; {own}"
                    ),
                )
                .fix(["run the guardian with its eBPF programs (not --no-ebpf)".to_owned()]),
                None => Check::new(
                    NAME,
                    Verdict::Weaker,
                    format!(
                        "{found}; the same uid may lower a holder's limit to 0, after which \
                         only the guardian's eBPF (which SIGKILLs a holder about to dump core) \
                         keeps the dump from the helper; {own}"
                    ),
                )
                .fix(["start the guardian, with its eBPF programs".to_owned()]),
            }
        }
    }
}

/// `dev.tty.legacy_tiocsti`.
pub(in crate::doctor) fn tiocsti(facts: &Facts) -> Check {
    const NAME: &str = "tiocsti";
    let sysctl = "sysctl -w dev.tty.legacy_tiocsti=0; to keep it: \
                  echo dev.tty.legacy_tiocsti=0 > /etc/sysctl.d/60-tiocsti.conf";
    let pushes = "any process with a terminal open may push keystrokes into it (TIOCSTI), \
                  e.g. type a command into the shell of a session that holds secrets; the \
                  guardian does not stop this";
    match facts.legacy_tiocsti {
        Some(0) => Check::new(
            NAME,
            Verdict::Ok,
            "0: only a process with CAP_SYS_ADMIN may push input into a terminal (TIOCSTI)",
        ),
        Some(value) => {
            Check::new(NAME, Verdict::Weaker, format!("{value}: {pushes}")).fix([sysctl.to_owned()])
        }
        None => Check::new(
            NAME,
            Verdict::Weaker,
            format!(
                "no dev.tty.legacy_tiocsti: a kernel older than {LEGACY_TIOCSTI} always allows \
                 TIOCSTI: {pushes}"
            ),
        )
        .fix([format!(
            "a {LEGACY_TIOCSTI} or newer kernel, then dev.tty.legacy_tiocsti=0"
        )]),
    }
}
