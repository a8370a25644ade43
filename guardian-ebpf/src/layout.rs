//! Where the programs find what they read in the running kernel's structures.

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
    /// `task_struct.worker_private`: an io-wq worker's `io_worker`.
    TaskWorkerPrivate,
    /// `io_worker.task`: the worker's own task.
    IoWorkerTask,
    /// `io_worker.cur_work`: the request the worker is running.
    IoWorkerCurWork,
    /// `io_kiocb.work`: where a request's `io_wq_work` sits in it.
    IoKiocbWork,
    /// `io_kiocb.file`: the file a request runs on.
    IoKiocbFile,
    /// `task_struct.io_uring`: set once the task has used io_uring.
    TaskIoUring,
}

impl Layout {
    /// Number of entries.
    pub const COUNT: usize = Self::TaskIoUring as usize + 1;
}
