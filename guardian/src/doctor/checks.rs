//! Each check: the facts read off the host (and the guardian's `status`,
//! where it answers) judged `ok`, `weaker` or `missing`, said plainly,
//! with the fix where there is one. What each says of the guardian is what
//! its code does: `os::peer` (SO_PEERPIDFD), `kernel::early_kill`
//! (bpf_send_signal_task), `kernel::lsm`, `os::hardening` (core limits).

#![forbid(unsafe_code)]

use serde::Serialize;

use super::{
    host::Facts,
    parse::{CorePattern, KernelVersion},
};
use crate::{
    os::peer::Pinning,
    protocol::{StatusInfo, TamperProtection, WatchMode},
};

text_enum! {
    /// How a check came out.
    pub enum Verdict {
        /// As strong as it gets.
        Ok = "ok",
        /// Works, but less well than it could.
        Weaker = "weaker",
        /// Not there.
        Missing = "missing",
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is checked, one word.
    pub name: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found, and what it means here.
    pub found: String,
    /// What to do to get the strongest, one step a line (empty: nothing).
    pub fix: Vec<String>,
}

impl Check {
    fn new(name: &'static str, verdict: Verdict, found: impl Into<String>) -> Self {
        Self {
            name,
            verdict,
            found: found.into(),
            fix: Vec::new(),
        }
    }

    fn fix(mut self, steps: impl IntoIterator<Item = String>) -> Self {
        self.fix.extend(steps);
        self
    }
}

/// The guardian as `doctor` found it.
#[derive(Clone, Debug)]
pub enum Guardian {
    /// It answered `status`.
    Running(Box<StatusInfo>),
    /// It did not; why.
    NotReached(String),
}

impl Guardian {
    fn status(&self) -> Option<&StatusInfo> {
        match self {
            Self::Running(status) => Some(status),
            Self::NotReached(_) => None,
        }
    }

    /// True when the guardian runs in its strongest mode.
    pub fn is_strongest(&self) -> bool {
        self.status()
            .is_some_and(|status| status.tamper_protection == TamperProtection::BpfLsmTracepoints)
    }

    fn tamper_protection(&self) -> Option<TamperProtection> {
        self.status().map(|status| status.tamper_protection)
    }
}

/// The first kernel with `SO_PEERPIDFD`.
const PEER_PIDFD: KernelVersion = KernelVersion::new(6, 5);
/// The first kernel with `bpf_send_signal_task`.
const SEND_SIGNAL_TASK: KernelVersion = KernelVersion::new(6, 13);
/// The first kernel with `kernel.io_uring_disabled`.
const IO_URING_DISABLED: KernelVersion = KernelVersion::new(6, 6);
/// The first kernel with `dev.tty.legacy_tiocsti`.
const LEGACY_TIOCSTI: KernelVersion = KernelVersion::new(6, 2);

/// Every check, in the order they are shown.
pub(super) fn all(facts: &Facts, guardian: &Guardian) -> Vec<Check> {
    vec![
        bpf_lsm(facts, guardian),
        kernel(facts),
        peer_pidfd(facts, guardian),
        early_kill(facts, guardian),
        io_uring(facts, guardian),
        ptrace_scope(facts),
        core_pattern(facts, guardian),
        tiocsti(facts),
        procps(facts, guardian),
        self::guardian(facts, guardian),
    ]
}

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
pub(super) fn bpf_lsm(facts: &Facts, guardian: &Guardian) -> Check {
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

/// The kernel's release.
pub(super) fn kernel(facts: &Facts) -> Check {
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
pub(super) fn peer_pidfd(facts: &Facts, guardian: &Guardian) -> Check {
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
pub(super) fn early_kill(facts: &Facts, guardian: &Guardian) -> Check {
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

/// `kernel.io_uring_disabled`.
pub(super) fn io_uring(facts: &Facts, guardian: &Guardian) -> Check {
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
pub(super) fn ptrace_scope(facts: &Facts) -> Check {
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
pub(super) fn core_pattern(facts: &Facts, guardian: &Guardian) -> Check {
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
pub(super) fn tiocsti(facts: &Facts) -> Check {
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

/// procps's `ps`, which may read every process's environment.
pub(super) fn procps(facts: &Facts, guardian: &Guardian) -> Check {
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
pub(super) fn guardian(facts: &Facts, guardian: &Guardian) -> Check {
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

/// True when the LSM list read names `bpf`.
fn bpf_listed(facts: &Facts) -> bool {
    facts
        .lsms
        .as_ref()
        .is_some_and(|(list, _)| list.iter().any(|lsm| lsm == "bpf"))
}
