//! What `list` and `status` report: secrets described without their values,
//! and which of the guardian's protections are in force.

use serde::{Deserialize, Serialize};

/// One line of `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The secret's name.
    pub name: String,
    /// The uid that stored it.
    pub uid: u32,
    /// The leader it is bound to.
    pub leader: i32,
    /// Live processes holding it.
    pub holders: usize,
    /// Their pids, as far as the guardian knows them (a holder's children
    /// forked since the last event may be missing).
    pub holder_pids: Vec<i32>,
    /// Seconds since it was stored.
    pub age_secs: u64,
    /// Seconds until its TTL expires, if it has one.
    pub ttl_left_secs: Option<u64>,
}

text_enum! {
    /// How the kernel is watched.
    pub enum WatchMode {
        /// eBPF tracepoints report exits, hangups, forks and tamper attempts.
        EbpfTracepoints = "ebpf-tracepoints",
        /// No eBPF: leaders and holders are watched by pidfd.
        PidfdFallback = "pidfd-fallback",
    }
}

text_enum! {
    /// How holders' children are found.
    pub enum ForkTracking {
        /// In the kernel, as they are born.
        Ebpf = "ebpf",
        /// By a scan of /proc when a trigger fires.
        ProcScan = "proc-scan",
    }
}

text_enum! {
    /// How holder trees are killed.
    pub enum Containment {
        /// One cgroup per exec, killed with cgroup.kill.
        Cgroup = "cgroup",
        /// Each known holder through its pidfd.
        Pidfd = "pidfd",
    }
}

text_enum! {
    /// What kills holders if the guardian dies.
    pub enum FailClosed {
        /// The supervisor process.
        Supervisor = "supervisor",
        /// Nothing.
        None = "none",
    }
}

text_enum! {
    /// How ptrace and process_vm_readv/writev on holders are stopped.
    pub enum TamperProtection {
        /// Refused with EPERM by BPF LSM, and the caller SIGKILLed at syscall entry.
        BpfLsmTracepoints = "bpf-lsm+tracepoints",
        /// The caller SIGKILLed at syscall entry.
        EbpfTracepoints = "ebpf-tracepoints",
        /// Not stopped.
        None = "none",
    }
}

/// How the entry of [`ReadPaths::open`] begins that says the system-call
/// programs watch the 64-bit table only (`watch_32_bit_syscalls = false`).
pub const UNWATCHED_TABLES: &str = "32-bit and x32 system calls";

/// Which read paths into holders and session members are stopped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadPaths {
    /// Stopped: the caller is SIGKILLed before a byte is read.
    pub stopped: Vec<String>,
    /// Open on this machine, each with why and the fix.
    pub open: Vec<String>,
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// The guardian's pid.
    pub pid: i32,
    /// The guardian's version.
    pub version: String,
    /// Seconds since the guardian started.
    pub uptime_secs: u64,
    /// The socket it listens on.
    pub socket: String,
    /// The audit log it appends to.
    pub audit_log: String,
    /// How the kernel is watched.
    pub watch_mode: WatchMode,
    /// Why eBPF is not in use, when it is not.
    pub ebpf_error: Option<String>,
    /// How holders' children are found.
    pub fork_tracking: ForkTracking,
    /// How holder trees are killed.
    pub containment: Containment,
    /// What kills holders if the guardian dies.
    pub fail_closed: FailClosed,
    /// How ptrace/process_vm_readv on holders is stopped.
    pub tamper_protection: TamperProtection,
    /// Why the BPF LSM program is not in force, when it is not.
    pub lsm_error: Option<String>,
    /// Why the kernel does not SIGKILL a leader's newest holder at the
    /// leader's exit itself (before the guardian wakes), when it does not.
    pub early_kill_error: Option<String>,
    /// Why logind's screen lock and suspend signals are not watched, when
    /// they are not (no system bus, no logind).
    #[serde(default)]
    pub lock_watch_error: Option<String>,
    /// The read paths into a protected process that are stopped, and those
    /// left open on this machine, with the fix where there is one.
    pub read_paths: ReadPaths,
    /// True while the syscall tamper tracepoints are attached: whenever a
    /// secret is held, a holder lives or a session that held one is still
    /// guarded (they cost every syscall on the machine a slow path, so an
    /// idle guardian detaches them). For another user than root, true only
    /// while that user has one of those.
    pub tamper_armed: bool,
    /// Where secret bytes live.
    pub memory_backend: crate::os::secret_mem::Backing,
    /// How a client is pinned to the process that connected (the fallback
    /// before Linux 6.5 is named).
    pub client_pinning: crate::os::peer::Pinning,
    /// Bytes of secrets in pages known to be locked (root); for another
    /// user, the bytes charged to that user.
    pub locked_bytes: usize,
    /// Secrets held (root: everyone's; another user: that user's).
    pub secrets: usize,
    /// Sessions guarded, by their watched leaders: each from its first
    /// secret until its leader exits, whether or not it holds one now
    /// (root: all; another user: its own and those its secrets are bound
    /// to).
    pub leaders: usize,
    /// Processes holding secrets (root: all; another user: its own).
    pub holders: usize,
    /// Leader events lost to a full ring buffer (each one wipes everything).
    pub dropped_events: u64,
    /// Holder fork and exit events lost to a full ring buffer (the holders
    /// are then read off the kernel's map; without cgroups, everything is
    /// wiped).
    pub holder_events_lost: u64,
    /// The kernel's limit on tamper records, and what it held back.
    pub tamper_limit: TamperLimit,
    /// How the audit log's fdatasyncs were shared by answers (root only).
    #[serde(default)]
    pub audit_flushes: Option<AuditFlushes>,
    /// The guardian's self-protection.
    pub hardening: crate::os::hardening::Protections,
}

/// Answers wait for their audit records to be durable; one fdatasync
/// releases every answer whose record was written before it began.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditFlushes {
    /// fdatasyncs made by the syncer since the guardian started.
    pub flushes: u64,
    /// Answers they released.
    pub answers: u64,
}

/// The in-kernel rate limit on tamper records: past it, attempts are still
/// stopped but only counted, and summed up in the audit log once a second.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TamperLimit {
    /// Records sent per caller uid per second.
    pub records_per_uid_per_second: u32,
    /// Attempts past the limit (root: by anyone; another user: by itself).
    pub suppressed: u64,
    /// Records lost to a full tamper ring buffer (no wipe; root only).
    pub lost: u64,
}
