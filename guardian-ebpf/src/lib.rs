//! What the eBPF programs and the guardian agree on: map and program names, the
//! globals the guardian sets before loading, the values stored in maps, and the
//! one event record the programs write to the ring buffer.
//!
//! This library is `no_std`, has no dependencies and no `unsafe`, so the guardian
//! builds it for the host while the programs (`src/main.rs`) build it for BPF.

#![no_std]
#![forbid(unsafe_code)]

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
    /// of a secret file outside its grant; a holder's change of uid.
    pub const EXIT_64_CALLS: [&str; 12] = [
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
    /// `task_fix_setuid` refuses a holder's change of uid.
    pub const TASK_FIX_SETUID: (&str, &str) = ("task_fix_setuid", "task_fix_setuid");
    /// `bprm_committed_creds` SIGKILLs a holder that exec'd a set-uid
    /// program before it runs as another user.
    pub const BPRM_COMMITTED_CREDS: (&str, &str) = ("bprm_committed_creds", "bprm_committed_creds");
    /// Every BPF LSM program; attached while armed, like the tracepoints
    /// they replace.
    pub const LSM: [(&str, &str); 4] = [
        PTRACE_ACCESS_CHECK,
        FILE_OPEN,
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

/// What the programs must know of the running kernel's memory, as indexes
/// into the `LAYOUT` global: member offsets (from BTF) and the addresses of
/// the functions that identify a file (from /proc/kallsyms). A zero address
/// means unknown; the guardian refuses to arm the read-path programs then.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `task_struct.tgid`.
    TaskTgid,
    /// `task_struct.thread_info.status` (x86: `TS_COMPAT` marks a 32-bit syscall).
    TaskStatus,
    /// `task_struct.files`.
    TaskFiles,
    /// `task_struct.thread_pid`.
    TaskThreadPid,
    /// `task_struct.pid_links` (`[PIDTYPE_PID]` is first).
    TaskPidLinks,
    /// `task_struct.ptraced`: the list of tasks this one traces.
    TaskPtraced,
    /// `task_struct.ptrace_entry`: this task's node in its tracer's list.
    TaskPtraceEntry,
    /// `task_struct.cred` (the subjective credentials).
    TaskCred,
    /// `cred.cap_effective`.
    CredCapEffective,
    /// `cred.uid`.
    CredUid,
    /// `cred.suid`.
    CredSuid,
    /// `cred.euid`.
    CredEuid,
    /// `cred.fsuid`.
    CredFsuid,
    /// `cred.user_ns`.
    CredUserNs,
    /// `user_namespace.level`.
    UserNsLevel,
    /// `files_struct.fdt`.
    FilesFdt,
    /// `fdtable.max_fds`.
    FdtMaxFds,
    /// `fdtable.fd`.
    FdtFd,
    /// `file.f_op`.
    FileOp,
    /// `file.f_inode`.
    FileInode,
    /// `file.private_data`.
    FilePrivate,
    /// `inode.i_private`.
    InodePrivate,
    /// `file_operations.read`.
    FopRead,
    /// `file_operations.poll`.
    FopPoll,
    /// `proc_inode.pid`.
    ProcInodePid,
    /// `proc_inode.vfs_inode`: where the VFS inode sits in its proc_inode.
    ProcInodeVfs,
    /// `pid.level`: the depth of the pid's namespace (0 is the initial one).
    PidLevel,
    /// `pid.tasks` (`[PIDTYPE_PID]` is first).
    PidTasks,
    /// Address of `environ_read`: the read of `/proc/PID/environ`.
    EnvironRead,
    /// Address of `mem_read`: the read of `/proc/PID/mem`.
    MemRead,
    /// Address of `pidfd_poll`: the poll of a pidfd.
    PidfdPoll,
    /// `task_struct.flags` (`PF_IO_WORKER` marks an io_uring worker).
    TaskFlags,
    /// `task_struct.mm`.
    TaskMm,
    /// `mm_struct.owner` (CONFIG_MEMCG): the task an address space belongs to.
    MmOwner,
    /// `io_kiocb.opcode`: which io_uring operation a request is.
    IoKiocbOpcode,
    /// `task_struct.signal`.
    TaskSignal,
    /// `signal_struct.flags` (`SIGNAL_GROUP_EXIT`: the process is being killed).
    SignalFlags,
    /// `inode.i_ino`.
    InodeIno,
    /// `inode.i_sb`.
    InodeSb,
    /// `super_block.s_dev`.
    SuperBlockDev,
    /// `mm_struct.env_end` (0 until an exec has put the new environment in
    /// place).
    MmEnvEnd,
    /// `mm_struct.exe_file`: the process's executable.
    MmExeFile,
    /// `file.f_path.dentry`.
    FileDentry,
    /// `dentry.d_name.name`: the entry's own name, NUL-terminated.
    DentryName,
}

impl Layout {
    /// Number of entries.
    pub const COUNT: usize = Self::DentryName as usize + 1;
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

/// The x86-64 system call ABIs as the raw syscall tracepoints see them: the
/// same number means different calls in the 64-bit, x32 and 32-bit (compat,
/// `int $0x80`) tables, so a call is named only with the task's compat flag.
pub mod abi {
    /// The call a read-path program acts on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Call {
        /// ptrace(2).
        Ptrace,
        /// process_vm_readv(2).
        VmReadv,
        /// process_vm_writev(2).
        VmWritev,
        /// pidfd_getfd(2).
        PidfdGetfd,
        /// open, openat, openat2, creat or open_by_handle_at: returns a new
        /// descriptor.
        Open,
        /// perf_event_open(2): sampling a process's registers and stack.
        PerfEventOpen,
        /// A call that may change the caller's uids: the setuid family. (An
        /// exec of a set-uid program is judged at `sched_process_exec`,
        /// whatever the table.)
        Credentials,
    }

    /// Set in the number of an x32 system call.
    pub const X32_BIT: i64 = 0x4000_0000;
    /// `TS_COMPAT` in `thread_info.status`: the current call is a 32-bit one.
    pub const TS_COMPAT: u32 = 0x0002;
    /// Offset of `orig_ax` (the system call number) in x86-64 `struct pt_regs`.
    pub const ORIG_AX: u64 = 120;
    /// Offset of `ax` (at system call exit, the return value) in x86-64
    /// `struct pt_regs`.
    pub const AX: u64 = 80;

    /// Offsets in `struct pt_regs` of the six argument registers: rdi, rsi,
    /// rdx, r10, r8, r9 for 64-bit calls; ebx, ecx, edx, esi, edi, ebp for
    /// 32-bit ones (the UAPI layout of arch/x86/include/uapi/asm/ptrace.h).
    const NATIVE_ARGS: [u64; 6] = [112, 104, 96, 56, 72, 64];
    const COMPAT_ARGS: [u64; 6] = [40, 88, 96, 104, 112, 32];

    /// Offset in `struct pt_regs` of argument `n` (0-based, below 6).
    pub const fn arg_offset(n: usize, compat: bool) -> u64 {
        if compat {
            COMPAT_ARGS[n]
        } else {
            NATIVE_ARGS[n]
        }
    }

    /// The call `id` names, if it is one the programs act on.
    pub const fn classify(id: i64, compat: bool) -> Option<Call> {
        if compat {
            return match id {
                26 => Some(Call::Ptrace),
                347 => Some(Call::VmReadv),
                348 => Some(Call::VmWritev),
                438 => Some(Call::PidfdGetfd),
                5 | 8 | 295 | 342 | 437 => Some(Call::Open),
                336 => Some(Call::PerfEventOpen),
                // setuid, setreuid, setfsuid, setresuid, their 32-bit-uid twins
                23 | 70 | 138 | 164 | 203 | 208 | 213 | 215 => Some(Call::Credentials),
                _ => None,
            };
        }
        match id {
            101 | 0x4000_0209 => Some(Call::Ptrace),
            310 | 0x4000_021b => Some(Call::VmReadv),
            311 | 0x4000_021c => Some(Call::VmWritev),
            438 | 0x4000_01b6 => Some(Call::PidfdGetfd),
            2 | 85 | 257 | 304 | 437 => Some(Call::Open),
            0x4000_0002 | 0x4000_0055 | 0x4000_0101 | 0x4000_0130 | 0x4000_01b5 => Some(Call::Open),
            298 | 0x4000_012a => Some(Call::PerfEventOpen),
            // setuid, setreuid, setresuid, setfsuid; on x32 the same numbers
            105 | 113 | 117 | 122 => Some(Call::Credentials),
            0x4000_0069 | 0x4000_0071 | 0x4000_0075 | 0x4000_007a => Some(Call::Credentials),
            _ => None,
        }
    }

    /// How a system call that takes another process's address-space lock
    /// names what it reaches into.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Reach {
        /// Through descriptors: the argument indexes of the file(s) read or
        /// written (a `/proc/PID/environ` or `mem` file).
        Files(usize, Option<usize>),
        /// Directly: process_vm_readv/writev, ptrace.
        Process,
    }

    /// What a system call in progress reaches into another process through,
    /// for the read, write and copy calls and process_vm_*/ptrace.
    pub const fn reach(id: i64, compat: bool) -> Option<Reach> {
        let (one, pair_in_out, copy) = (
            Some(Reach::Files(0, None)),
            Some(Reach::Files(0, Some(1))),
            Some(Reach::Files(0, Some(2))),
        );
        if compat {
            return match id {
                3 | 4 | 145 | 146 | 180 | 181 | 333 | 334 | 378 | 379 => one,
                187 | 239 => pair_in_out,
                313 | 377 => copy,
                26 | 347 | 348 => Some(Reach::Process),
                _ => None,
            };
        }
        let id = if id & X32_BIT != 0 { id & !X32_BIT } else { id };
        match id {
            // read, write, pread64, pwrite64, readv, writev, preadv, pwritev,
            // preadv2, pwritev2 (x32: readv 515, writev 516, preadv 534,
            // pwritev 535, preadv2 546, pwritev2 547)
            0 | 1 | 17 | 18 | 19 | 20 | 295 | 296 | 327 | 328 => one,
            515 | 516 | 534 | 535 | 546 | 547 => one,
            40 => pair_in_out, // sendfile(out, in)
            275 | 326 => copy, // splice, copy_file_range
            101 | 310 | 311 | 521 | 539 | 540 => Some(Reach::Process),
            _ => None,
        }
    }

    /// True when `id` names an interesting call in either table, so the
    /// compat flag is read only for these few numbers.
    pub const fn may_matter(id: i64) -> bool {
        classify(id, false).is_some() || classify(id, true).is_some()
    }
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

/// The syscall of a `Tamper` event (architecture-independent codes).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TamperSyscall {
    /// ptrace(2).
    Ptrace = 1,
    /// process_vm_readv(2).
    ProcessVmReadv = 2,
    /// process_vm_writev(2).
    ProcessVmWritev = 3,
    /// Any access the kernel checks with ptrace_may_access (/proc/PID/mem,
    /// /proc/PID/environ, pidfd_getfd, ...), refused by the BPF LSM program;
    /// `request` is the PTRACE_MODE_* mask.
    PtraceAccessCheck = 4,
    /// An open of `/proc/PID/environ` (any spelling, `task/TID` too).
    OpenEnviron = 5,
    /// An open of `/proc/PID/mem`.
    OpenMem = 6,
    /// pidfd_getfd(2).
    PidfdGetfd = 7,
    /// An io_uring open (or fixed-descriptor install) of `/proc/PID/mem`.
    IoUringOpen = 9,
    /// An io_uring worker reading a ward's memory.
    IoUringRead = 10,
    /// A read or write through a ward's `/proc/PID/mem`, however the
    /// descriptor was obtained.
    ProcRead = 11,
    /// process_vm_readv/writev or ptrace reaching into a ward's memory
    /// (caught where the kernel takes its address-space lock).
    MemoryAccess = 12,
    /// perf_event_open(2) aimed at a ward (samples its registers and stack).
    PerfEventOpen = 13,
    /// A holder's uids changed (setuid family, or the exec of a setuid
    /// program): it left its grant.
    Credentials = 14,
    /// An open of a secret delivered as a file (`exec --file`) by a process
    /// outside its grant, by any path (`/proc/HOLDER/fd/N`, an io_uring
    /// open); `request` is the grant.
    OpenSecretFile = 15,
    /// A read through a ward's `/proc/PID/environ` that may hold a value,
    /// however the descriptor was obtained.
    ReadEnviron = 16,
    /// An io_uring open (or fixed-descriptor install) of a
    /// `/proc/PID/environ` that may hold a value.
    IoUringOpenEnviron = 17,
}

impl TamperSyscall {
    /// The syscall's name for a code, or `"unknown"`.
    pub fn name(code: u32) -> &'static str {
        match code {
            1 => "ptrace",
            2 => "process_vm_readv",
            3 => "process_vm_writev",
            4 => "ptrace_access_check",
            5 => "open of environ",
            6 => "open of mem",
            7 => "pidfd_getfd",
            9 => "io_uring open of mem",
            10 => "io_uring read of a process's memory",
            11 => "read or write through mem",
            12 => "memory access",
            13 => "perf_event_open",
            14 => "credential change (setuid, or exec of a setuid program)",
            15 => "open of a secret file",
            16 => "read through environ",
            17 => "io_uring open of environ",
            _ => "unknown",
        }
    }
}

/// Bits of [`Event::flags`] for a `Tamper` event.
pub mod flags {
    /// The kernel refuses this caller anyway (another uid without
    /// CAP_SYS_PTRACE): audit the attempt, leave the target's secrets alone.
    pub const REFUSED_BY_KERNEL: u32 = 1;
    /// The call came through the 32-bit (compat) system call table.
    pub const COMPAT: u32 = 2;
    /// A BPF LSM hook refused the call with an error: the caller lives, and
    /// no byte was copied.
    pub const DENIED: u32 = 4;
}

/// Kinds of [`Event`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The last thread of a watched leader exited. `pid` is the leader.
    LeaderExit = 1,
    /// SIGHUP was generated for a watched leader. `pid` is the leader,
    /// `other` the sender.
    LeaderHangup = 2,
    /// A holder created a process. `pid` is the child, `other` the parent,
    /// `grant` the grant it inherited.
    HolderFork = 3,
    /// The last thread of a holder exited. `pid` is the holder.
    HolderExit = 4,
    /// A process reached into a protected process (ptrace, process_vm_*,
    /// pidfd_getfd, procfs memory or environment) and was SIGKILLed before
    /// returning to user space. `pid` is the attacker, `other` the target's
    /// tgid, `uid`/`comm` the attacker's, `syscall` and `request` what it
    /// called, `flags` whether the kernel would have refused it.
    Tamper = 5,
    /// A ward exec'd: its environment is new. `pid` is the ward, `request`
    /// the environment's stamp.
    EnvironChanged = 6,
}

impl EventKind {
    fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::LeaderExit,
            2 => Self::LeaderHangup,
            3 => Self::HolderFork,
            4 => Self::HolderExit,
            5 => Self::Tamper,
            6 => Self::EnvironChanged,
            _ => return None,
        })
    }
}

/// One ring-buffer record. Eight `u32`s (32 bytes), two `u64`s, a 16-byte
/// and a 48-byte array make 112 bytes at 8-byte alignment: the layout has no
/// implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// The process the event is about (see [`EventKind`]).
    pub pid: u32,
    /// A second process, depending on the kind; 0 if none.
    pub other: u32,
    /// For `HolderFork`, the grant the child inherited; for `Tamper`, the
    /// leader whose session the target is in (0 if none).
    pub grant: u32,
    /// For `Tamper` and `LeaderHangup`, the uid of the caller or sender.
    pub uid: u32,
    /// For `Tamper` and `LeaderHangup`, the gid of the caller or sender.
    pub gid: u32,
    /// For `Tamper`, [`flags`] bits. Also keeps `request` 8-byte aligned
    /// without implicit padding.
    pub flags: u32,
    /// For `Tamper`, a [`TamperSyscall`] code.
    pub syscall: u32,
    /// For `Tamper` by ptrace, the request.
    pub request: u64,
    /// `bpf_ktime_get_ns()` when the event happened (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// For `Tamper` and `LeaderHangup`, the caller's command name (NUL-padded).
    pub comm: [u8; 16],
    /// For `Tamper`, the base name of the caller's executable (NUL-padded),
    /// taken in the kernel: a killed caller's `/proc/PID/exe` is gone by
    /// the time the guardian could read it.
    pub exe: [u8; EXE_NAME],
}

/// Bytes of an executable's base name an [`Event`] carries.
pub const EXE_NAME: usize = 48;

/// `bytes` up to their first NUL, and up to the last whole character of
/// UTF-8 (a name the kernel cut may end inside one); `"?"` if they do not
/// begin as UTF-8 at all.
fn nul_terminated(bytes: &[u8]) -> &str {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match core::str::from_utf8(&bytes[..len]) {
        Ok(text) => text,
        Err(err) if err.valid_up_to() > 0 => {
            core::str::from_utf8(&bytes[..err.valid_up_to()]).unwrap_or("?")
        }
        Err(_) => "?",
    }
}

impl Event {
    /// Size of the record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// An all-zero record, to fill in.
    pub const EMPTY: Self = Self {
        kind: 0,
        pid: 0,
        other: 0,
        grant: 0,
        uid: 0,
        gid: 0,
        flags: 0,
        syscall: 0,
        request: 0,
        ktime_ns: 0,
        comm: [0; 16],
        exe: [0; EXE_NAME],
    };

    /// `comm` up to its first NUL, or `"?"` if it is not UTF-8.
    pub fn comm_str(&self) -> &str {
        nul_terminated(&self.comm)
    }

    /// `exe` up to its first NUL (empty if the kernel had no name), or
    /// `"?"` if it is not UTF-8.
    pub fn exe_str(&self) -> &str {
        nul_terminated(&self.exe)
    }

    /// The record's kind, if it is one this build knows.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_u32(self.kind)
    }

    /// Decodes a ring-buffer record; `None` if it has the wrong size.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::SIZE {
            return None;
        }
        let u32_at = |at: usize| {
            let mut raw = [0u8; 4];
            raw.copy_from_slice(&bytes[at..at + 4]);
            u32::from_ne_bytes(raw)
        };
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes[at..at + 8]);
            u64::from_ne_bytes(raw)
        };
        let mut comm = [0u8; 16];
        comm.copy_from_slice(&bytes[48..64]);
        let mut exe = [0u8; EXE_NAME];
        exe.copy_from_slice(&bytes[64..64 + EXE_NAME]);
        Some(Self {
            kind: u32_at(0),
            pid: u32_at(4),
            other: u32_at(8),
            grant: u32_at(12),
            uid: u32_at(16),
            gid: u32_at(20),
            flags: u32_at(24),
            syscall: u32_at(28),
            request: u64_at(32),
            ktime_ns: u64_at(40),
            comm,
            exe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_bytes(event: &Event) -> [u8; Event::SIZE] {
        let mut out = [0u8; Event::SIZE];
        out[0..4].copy_from_slice(&event.kind.to_ne_bytes());
        out[4..8].copy_from_slice(&event.pid.to_ne_bytes());
        out[8..12].copy_from_slice(&event.other.to_ne_bytes());
        out[12..16].copy_from_slice(&event.grant.to_ne_bytes());
        out[16..20].copy_from_slice(&event.uid.to_ne_bytes());
        out[20..24].copy_from_slice(&event.gid.to_ne_bytes());
        out[24..28].copy_from_slice(&event.flags.to_ne_bytes());
        out[28..32].copy_from_slice(&event.syscall.to_ne_bytes());
        out[32..40].copy_from_slice(&event.request.to_ne_bytes());
        out[40..48].copy_from_slice(&event.ktime_ns.to_ne_bytes());
        out[48..64].copy_from_slice(&event.comm);
        out[64..].copy_from_slice(&event.exe);
        out
    }

    #[test]
    fn event_round_trips_through_bytes() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"gdb\0");
        let mut exe = [0u8; EXE_NAME];
        exe[..11].copy_from_slice(b"python3.11\0");
        let event = Event {
            kind: EventKind::Tamper as u32,
            pid: 42,
            other: 7,
            grant: 5,
            uid: 1000,
            gid: 100,
            flags: 0,
            syscall: 101,
            request: 0x4206,
            ktime_ns: 123_456_789_012,
            comm,
            exe,
        };
        assert_eq!(Event::from_bytes(&to_bytes(&event)), Some(event));
        assert_eq!(event.kind(), Some(EventKind::Tamper));
        assert_eq!(event.comm_str(), "gdb");
        assert_eq!(event.exe_str(), "python3.11");
    }

    #[test]
    fn syscall_numbers_are_read_per_table() {
        use abi::{Call, classify, may_matter};
        // ptrace in each table; 26 is msync in the 64-bit one.
        assert_eq!(classify(101, false), Some(Call::Ptrace));
        assert_eq!(classify(26, true), Some(Call::Ptrace));
        assert_eq!(classify(26, false), None);
        assert_eq!(classify(abi::X32_BIT | 521, false), Some(Call::Ptrace));
        assert_eq!(classify(abi::X32_BIT | 539, false), Some(Call::VmReadv));
        assert_eq!(classify(347, true), Some(Call::VmReadv));
        assert_eq!(classify(311, false), Some(Call::VmWritev));
        // openat is 257 in the 64-bit table, 295 in the 32-bit one.
        assert_eq!(classify(257, false), Some(Call::Open));
        assert_eq!(classify(295, true), Some(Call::Open));
        // open_by_handle_at reopens a file by its handle (a secret file too).
        assert_eq!(classify(304, false), Some(Call::Open));
        assert_eq!(classify(342, true), Some(Call::Open));
        assert_eq!(classify(295, false), None);
        assert_eq!(classify(abi::X32_BIT | 257, false), Some(Call::Open));
        assert_eq!(classify(438, true), Some(Call::PidfdGetfd));
        assert!(may_matter(26) && may_matter(5) && !may_matter(0) && !may_matter(1));
        // The first argument is rdi natively and ebx through int $0x80.
        assert_eq!(abi::arg_offset(0, false), 112);
        assert_eq!(abi::arg_offset(0, true), 40);
    }

    #[test]
    fn calls_that_reach_into_another_address_space_are_read_per_table() {
        use abi::{Reach, reach};
        assert_eq!(reach(0, false), Some(Reach::Files(0, None))); // read
        assert_eq!(reach(3, true), Some(Reach::Files(0, None))); // read, 32-bit
        assert_eq!(reach(3, false), None); // close
        assert_eq!(reach(40, false), Some(Reach::Files(0, Some(1)))); // sendfile
        assert_eq!(
            reach(abi::X32_BIT | 515, false),
            Some(Reach::Files(0, None))
        ); // x32 readv
        assert_eq!(reach(310, false), Some(Reach::Process));
        assert_eq!(reach(347, true), Some(Reach::Process));
        assert_eq!(reach(257, false), None); // openat
        assert_eq!(abi::classify(298, false), Some(abi::Call::PerfEventOpen));
        assert_eq!(abi::classify(336, true), Some(abi::Call::PerfEventOpen));
    }

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

    #[test]
    fn wrong_sized_records_and_unknown_kinds_are_refused() {
        assert_eq!(Event::SIZE, 112);
        assert_eq!(Event::from_bytes(&[0u8; 111]), None);
        let unknown = Event {
            kind: 99,
            ..Event::EMPTY
        };
        assert_eq!(unknown.kind(), None);
    }
}
