//! What the eBPF programs and the guardian agree on: map and program names, the
//! globals the guardian sets before loading, the values stored in maps, and the
//! one event record the programs write to the ring buffer.
//!
//! The system call tables are in [`abi`], the event record in `event`, the
//! kernel layout indexes in `layout`.
//!
//! This library is `no_std`, has no dependencies and no `unsafe`, so the guardian
//! builds it for the host while the programs (`src/main.rs`) build it for BPF.

#![no_std]
#![forbid(unsafe_code)]

pub mod abi;
mod event;
mod layout;

pub use event::{EXE_NAME, Event, EventKind, TamperSyscall, flags};
pub use layout::Layout;

/// Names of the maps, exactly as the programs declare them.
pub mod maps {
    /// `HashMap<u32, u32>`: tgid of a bound session leader ->
    /// [`super::LEADER_WATCHED`], or [`super::LEADER_HUNG_UP`] once a SIGHUP
    /// for it was reported (further ones are not: a flood of them cannot fill
    /// the ring).
    pub const LEADERS: &str = "LEADERS";
    /// `HashMap<u32, u64>`: tgid of a process holding a secret -> its grant and
    /// state, packed by [`super::holder_value`].
    pub const HOLDERS: &str = "HOLDERS";
    /// `HashMap<u32, u32>`: tgid of a process no one may ptrace or
    /// process_vm_read/write -> [`super::PROTECTED_GUARDIAN`] for the
    /// guardian, [`super::PROTECTED_OTHER`] for its supervisor.
    pub const PROTECTED: &str = "PROTECTED";
    /// `RingBuf` that gets one record (a `u64`, the time) when the
    /// guardian's last thread starts to exit, before the kernel tears
    /// anything of it down: the supervisor polls it, and kills every holder
    /// at once.
    pub const GUARDIAN_DEATH: &str = "GUARDIAN_DEATH";
    /// `HashMap<u32, u32>`: tid of a non-main thread of a holder or protected
    /// process -> its tgid, so an attack aimed at a thread is caught too.
    pub const THREADS: &str = "THREADS";
    /// `HashMap<u32, u64>`: tgid of a process that may ask the guardian for a
    /// bound leader's secrets (the leader, its session, their descendants) ->
    /// that leader and the secrets' owner, packed by [`super::ward_value`].
    /// Children inherit the entry.
    pub const WARDS: &str = "WARDS";
    /// `HashMap<u32, u32>`: tgid of a bound session leader -> the newest
    /// holder bound to it, which the kernel SIGKILLs itself when the leader
    /// exits (where the kfuncs for that exist).
    pub const EARLY_KILL: &str = "EARLY_KILL";
    /// `HashMap<u32, u32>`: grant -> the uid whose `exec` made it. A holder
    /// whose credentials stop matching it has left the grant.
    pub const GRANT_OWNERS: &str = "GRANT_OWNERS";
    /// `HashMap<FileKey, u32>`: a secret delivered as a file (`exec --file`)
    /// -> the grant it was given to. Only that grant's holders may open it.
    pub const SECRET_FILES: &str = "SECRET_FILES";
    /// `RingBuf` of the [`super::Event`] records that decide the switch:
    /// leader exit and hangup, at most two per leader. Nothing else writes
    /// here, so no flood of any kind can crowd them out.
    pub const EVENTS: &str = "EVENTS";
    /// `RingBuf` of holder fork and exit records: as many as holders fork.
    pub const HOLDER_EVENTS: &str = "HOLDER_EVENTS";
    /// `PerCpuArray<u64>` with one slot: holder records lost to a full
    /// `HOLDER_EVENTS`. The guardian then reads its holders off the kernel
    /// map and the grants' cgroups (and fails closed without cgroups).
    pub const HOLDER_DROPPED: &str = "HOLDER_DROPPED";
    /// `RingBuf` of [`super::EventKind::Tamper`] records, at most
    /// [`super::TAMPER_BURST`] per caller uid per second.
    pub const TAMPER_EVENTS: &str = "TAMPER_EVENTS";
    /// `LruPerCpuHashMap<u32, RateWindow>`: caller uid -> its tamper records
    /// in the current second on this CPU, and how many were suppressed.
    pub const TAMPER_RATE: &str = "TAMPER_RATE";
    /// `PerCpuArray<u64>` with one slot: tamper records lost to a full
    /// `TAMPER_EVENTS` (each caller was still killed).
    pub const TAMPER_LOST: &str = "TAMPER_LOST";
    /// `PerCpuArray<u64>` with one slot: leader events the programs could not
    /// write because `EVENTS` was full. Any increase means the guardian missed
    /// something and must fail closed.
    pub const DROPPED: &str = "DROPPED";
    /// `HashMap<u32, u64>`: tgid of a ward -> the stamp of its environment
    /// (see [`super::ENVIRON_CHANGING`]). The programs write a new stamp at
    /// each exec and copy the parent's at each fork; the guardian adds one
    /// only for a ward that has none (an older process of a session), and
    /// only with `BPF_NOEXIST`.
    pub const ENVIRON_STAMPS: &str = "ENVIRON_STAMPS";
    /// `LruHashMap<u64, u32>`: environment stamps the guardian read and
    /// found holding none of its owner's values -> the tgid it read. A
    /// ward's environment may be read by anyone only while its stamp is
    /// here; an evicted stamp is guarded again (fail closed).
    pub const CLEAN_ENVIRONS: &str = "CLEAN_ENVIRONS";
    /// `RingBuf`: an [`super::EventKind::EnvironChanged`] record per exec of
    /// a ward. One lost leaves that environment guarded, nothing worse.
    pub const ENVIRON_EVENTS: &str = "ENVIRON_EVENTS";
}

/// Names of the programs with the tracepoint each attaches to, as `(program, category, event)`.
pub mod programs {
    /// Exit of every task: leader and holder deaths.
    pub const PROCESS_EXIT: (&str, &str, &str) = ("process_exit", "sched", "sched_process_exit");
    /// Creation of every task: holders' children become holders.
    pub const NEW_TASK: (&str, &str, &str) = ("new_task", "task", "task_newtask");
    /// Generation of every signal: SIGHUP aimed at a leader.
    pub const SIGNAL_GENERATE: (&str, &str, &str) =
        ("signal_generate", "signal", "signal_generate");
    /// Delivery of every signal: a holder about to dump core is SIGKILLed
    /// instead, so no core of it reaches a file or a piped helper.
    pub const SIGNAL_DELIVER: (&str, &str, &str) = ("signal_deliver", "signal", "signal_deliver");
    /// Entry of every system call, native and compat: process_vm_readv/writev
    /// aimed at a protected process, where the address-space-lock program,
    /// which stops them otherwise, is not in force.
    pub const SYSCALL_ENTER: (&str, &str) = ("syscall_enter", "sys_enter");
    /// Exit of every system call, native and compat: what
    /// [`SYSCALL_EXIT_64`] judges, in the 32-bit and x32 tables too.
    pub const SYSCALL_EXIT: (&str, &str) = ("syscall_exit", "sys_exit");
    /// Exit of the few 64-bit system calls the read paths judge, as
    /// `(program, category)`, attached to each tracepoint of
    /// [`EXIT_64_CALLS`]. The kernel runs it for no other call. (An exec of
    /// a set-uid program is judged at `sched_process_exec`, which every
    /// table reaches.)
    pub const SYSCALL_EXIT_64: (&str, &str) = ("syscall_exit_64", "syscalls");
    /// A successful ptrace attach, pidfd_getfd or perf_event_open on a
    /// protected process; an open of its procfs memory or environment, or
    /// of a secret file outside its grant; a holder's change of uid; a
    /// change of a session ward's limits from outside its session.
    pub const EXIT_64_CALLS: [&str; 13] = [
        "sys_exit_ptrace",
        "sys_exit_pidfd_getfd",
        "sys_exit_perf_event_open",
        "sys_exit_open",
        "sys_exit_creat",
        "sys_exit_openat",
        "sys_exit_openat2",
        "sys_exit_open_by_handle_at",
        "sys_exit_setuid",
        "sys_exit_setreuid",
        "sys_exit_setresuid",
        "sys_exit_setfsuid",
        "sys_exit_prlimit64",
    ];
    /// `tp_btf/sched_process_exit`, as `(program, tracepoint)`: a watched
    /// leader's exit SIGKILLs its newest holder from the kernel (loaded where
    /// the kernel has the kfuncs for it, Linux 6.13+).
    pub const LEADER_EXIT_KILL: (&str, &str) = ("leader_exit_kill", "sched_process_exit");
    /// The BPF LSM programs, as `(program, hook)`, loaded where the kernel
    /// has BPF LSM active; the system-call programs are the fallback.
    /// `ptrace_access_check` refuses what reaches into a ward's memory (ptrace,
    /// process_vm_*, pidfd_getfd, perf_event_open: checks in the attach mode
    /// or with the caller's real credentials), not the procfs reads `ps` and
    /// `lsof` make.
    pub const PTRACE_ACCESS_CHECK: (&str, &str) = ("ptrace_access_check", "ptrace_access_check");
    /// `file_open` refuses the open of a ward's `mem`, of an `environ` that
    /// may hold a value, and of a secret file outside its grant, by any path
    /// (io_uring and file handles too).
    pub const FILE_OPEN: (&str, &str) = ("file_open", "file_open");
    /// `task_setrlimit` marks a session ward whose limits are changed from
    /// outside its session: it dies of SIGKILL rather than dump core.
    pub const TASK_SETRLIMIT: (&str, &str) = ("task_setrlimit", "task_setrlimit");
    /// `task_fix_setuid` refuses a holder's change of uid.
    pub const TASK_FIX_SETUID: (&str, &str) = ("task_fix_setuid", "task_fix_setuid");
    /// `bprm_committed_creds` SIGKILLs a holder that exec'd a set-uid
    /// program before it runs as another user.
    pub const BPRM_COMMITTED_CREDS: (&str, &str) = ("bprm_committed_creds", "bprm_committed_creds");
    /// Every BPF LSM program; attached while armed, like the tracepoints
    /// they replace.
    pub const LSM: [(&str, &str); 5] = [
        PTRACE_ACCESS_CHECK,
        FILE_OPEN,
        TASK_SETRLIMIT,
        TASK_FIX_SETUID,
        BPRM_COMMITTED_CREDS,
    ];
    /// A task's name set: at an exec, before the new environment becomes
    /// readable, its ward's environment stamp is invalidated.
    pub const TASK_RENAME: (&str, &str, &str) = ("task_rename", "task", "task_rename");
    /// An exec done: a ward's environment gets a new stamp, and the guardian
    /// is asked to read it.
    pub const PROCESS_EXEC: (&str, &str, &str) = ("process_exec", "sched", "sched_process_exec");
    /// The tracepoints that watch sessions and holders, attached for the
    /// guardian's whole life.
    pub const WATCH: [(&str, &str, &str); 6] = [
        PROCESS_EXIT,
        NEW_TASK,
        SIGNAL_GENERATE,
        SIGNAL_DELIVER,
        TASK_RENAME,
        PROCESS_EXEC,
    ];
    /// Completion of an io_uring request (classic tracepoint): an
    /// io_uring open that returned a descriptor for a ward's procfs file.
    pub const IO_URING_COMPLETE: (&str, &str, &str) =
        ("io_uring_complete", "io_uring", "io_uring_complete");
    /// `mmap_lock_start_locking` (raw tracepoint): an io_uring worker about to
    /// read a ward's memory (through its `environ` or `mem`, however opened).
    pub const MM_LOCK: (&str, &str) = ("mm_lock", "mmap_lock_start_locking");
}

/// Placeholder ids of the kfunc calls the programs make (`early_kill`), as
/// the `imm` of each call instruction; the guardian writes the running
/// kernel's BTF id of the function over each before loading.
pub const KFUNCS: [(&str, i32); 3] = [
    ("bpf_task_from_pid", KFUNC_TASK_FROM_PID),
    ("bpf_send_signal_task", KFUNC_SEND_SIGNAL_TASK),
    ("bpf_task_release", KFUNC_TASK_RELEASE),
];
/// See [`KFUNCS`].
pub const KFUNC_TASK_FROM_PID: i32 = 0x6e73_6b01;
/// See [`KFUNCS`].
pub const KFUNC_SEND_SIGNAL_TASK: i32 = 0x6e73_6b02;
/// See [`KFUNCS`].
pub const KFUNC_TASK_RELEASE: i32 = 0x6e73_6b03;

/// The 8 bytes of a call to the kfunc whose BTF id is `id` (vmlinux's), as
/// a little-endian u64: `BPF_JMP | BPF_CALL`, `src_reg` =
/// `BPF_PSEUDO_KFUNC_CALL`, `off` 0, `imm` the id.
pub const fn kfunc_call(id: i32) -> u64 {
    0x85 | (2 << 12) | ((id as u32 as u64) << 32)
}

/// Globals (read-only data) the guardian fills in before load. Tracepoint field
/// offsets differ between kernels, so the guardian reads them from tracefs
/// rather than compiling them in.
pub mod globals {
    /// Offset of `group_dead` in `sched_process_exit`, or [`super::NO_FIELD`].
    pub const EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";
    /// Offset of `pid` in `task_newtask`.
    pub const NEWTASK_PID_OFFSET: &str = "NEWTASK_PID_OFFSET";
    /// Offset of `clone_flags` in `task_newtask`.
    pub const NEWTASK_CLONE_FLAGS_OFFSET: &str = "NEWTASK_CLONE_FLAGS_OFFSET";
    /// Offset of `sig` in `signal_generate`.
    pub const SIGNAL_SIG_OFFSET: &str = "SIGNAL_SIG_OFFSET";
    /// Offset of `pid` in `signal_generate`.
    pub const SIGNAL_PID_OFFSET: &str = "SIGNAL_PID_OFFSET";
    /// Offset of `sig` in `signal_deliver`.
    pub const DELIVER_SIG_OFFSET: &str = "DELIVER_SIG_OFFSET";
    /// Offset of `sa_handler` in `signal_deliver`.
    pub const DELIVER_HANDLER_OFFSET: &str = "DELIVER_HANDLER_OFFSET";
    /// Offset of `req` in `io_uring_complete`, or [`super::NO_FIELD`].
    pub const URING_REQ_OFFSET: &str = "URING_REQ_OFFSET";
    /// Offset of `res` in `io_uring_complete`, or [`super::NO_FIELD`].
    pub const URING_RES_OFFSET: &str = "URING_RES_OFFSET";
    /// `[u64; Layout::COUNT]`: kernel struct offsets and text addresses,
    /// indexed by [`super::Layout`].
    pub const LAYOUT: &str = "LAYOUT";
    /// `u32`: tamper records each CPU lets one uid send per second.
    pub const TAMPER_BURST_PER_CPU: &str = "TAMPER_BURST_PER_CPU";
}

/// The share of [`TAMPER_BURST`] each of `cpus` CPUs lets one uid send per
/// second (at least one).
pub const fn tamper_burst_per_cpu(cpus: u32) -> u32 {
    let share = TAMPER_BURST / if cpus == 0 { 1 } else { cpus };
    if share == 0 { 1 } else { share }
}

/// A file by its inode, as both user space (`fstat`) and a BPF program
/// (`file->f_inode`) can name it: the kernel's device number of its file
/// system (`MKDEV(major, minor)`, not `st_dev`'s encoding) and its inode
/// number. Every memfd shares one device, so the number tells them apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileKey {
    /// `inode.i_ino`.
    pub ino: u64,
    /// `inode.i_sb->s_dev`.
    pub dev: u32,
    /// Zero: keeps the key free of uninitialised padding.
    pub pad: u32,
}

/// ptrace(2) requests that make the caller a tracer.
pub const PTRACE_ATTACH: u64 = 16;
/// See [`PTRACE_ATTACH`].
pub const PTRACE_SEIZE: u64 = 0x4206;

/// Marks a tracepoint field the running kernel does not have.
pub const NO_FIELD: u32 = u32::MAX;

/// Value stored in `LEADERS` for a watched leader.
pub const LEADER_WATCHED: u32 = 1;

/// Value in `PROTECTED` for the guardian.
pub const PROTECTED_GUARDIAN: u32 = 2;

/// Value in `PROTECTED` for another protected process (the supervisor).
pub const PROTECTED_OTHER: u32 = 1;

/// Value in `LEADERS` for a leader whose hangup was reported.
pub const LEADER_HUNG_UP: u32 = 2;

/// Maximum entries in `LEADERS` and `HOLDERS`.
pub const MAX_TRACKED: u32 = 65_536;

/// Size of the ring buffer in bytes (a power of two, a multiple of the page size).
pub const RING_BYTES: u32 = 1 << 20;

/// An environment stamp that is never clean: an exec is replacing the
/// environment, which becomes readable before the exec is done.
pub const ENVIRON_CHANGING: u64 = 0;

/// Environment stamps the guardian chooses (for a ward with none) have this
/// bit set; the programs' are kernel clock readings, which never do.
pub const GUARDIAN_STAMP: u64 = 1 << 63;

/// Size of the environment ring buffer.
pub const ENVIRON_RING_BYTES: u32 = 1 << 18;

/// Size of the tamper ring buffer: room for thousands of callers' bursts.
pub const TAMPER_RING_BYTES: u32 = 1 << 19;

/// Tamper records sent per caller uid per [`TAMPER_WINDOW_NS`]; past that,
/// the caller is still killed and its attempts only counted.
pub const TAMPER_BURST: u32 = 16;

/// The rate limit's window: one second.
pub const TAMPER_WINDOW_NS: u64 = 1_000_000_000;

/// Uids whose tamper rate is tracked at once (least recently seen go first).
pub const MAX_RATED_UIDS: u32 = 4096;

/// One uid's tamper records on one CPU, in `TAMPER_RATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    /// `bpf_ktime_get_ns()` when the current window began.
    pub start_ns: u64,
    /// Records sent in the current window.
    pub sent: u64,
    /// Records suppressed since the uid was first seen.
    pub suppressed: u64,
}

/// What a holder is doing, stored in the low half of its `HOLDERS` value.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderState {
    /// Holds a live secret.
    Holding = 1,
    /// Its secret was wiped; it is being killed. A doomed holder that forks is
    /// SIGKILLed by the program itself, and its child is doomed too.
    Doomed = 2,
}

/// Packs a `HOLDERS` value: the grant (which `exec` the holder descends from)
/// in the high half, the [`HolderState`] in the low half. A child inherits the
/// whole value, so the guardian learns its grant from the event alone, even
/// when the parent has already exited.
pub const fn holder_value(grant: u32, state: HolderState) -> u64 {
    ((grant as u64) << 32) | state as u64
}

/// The grant half of a `HOLDERS` value.
pub const fn holder_grant(value: u64) -> u32 {
    (value >> 32) as u32
}

/// True if a `HOLDERS` value says the holder is doomed.
pub const fn holder_is_doomed(value: u64) -> bool {
    value as u32 == HolderState::Doomed as u32
}

/// Packs a `WARDS` value: the secrets' owner uid in the high half, the
/// bound leader's tgid in the low half.
pub const fn ward_value(uid: u32, leader: u32) -> u64 {
    ((uid as u64) << 32) | leader as u64
}

/// The leader half of a `WARDS` value.
pub const fn ward_leader(value: u64) -> u32 {
    value as u32
}

/// The owner half of a `WARDS` value.
pub const fn ward_owner(value: u64) -> u32 {
    (value >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ward_values_pack_owner_and_leader() {
        let value = ward_value(1000, 4242);
        assert_eq!((ward_owner(value), ward_leader(value)), (1000, 4242));
    }

    #[test]
    fn holder_values_pack_grant_and_state() {
        let value = holder_value(0xdead_beef, HolderState::Doomed);
        assert_eq!(holder_grant(value), 0xdead_beef);
        assert!(holder_is_doomed(value));
        assert!(!holder_is_doomed(holder_value(7, HolderState::Holding)));
    }
}
