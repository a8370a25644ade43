//! Reads kernel memory through the offsets and addresses the guardian put in
//! `LAYOUT` (from this kernel's BTF and /proc/kallsyms). Every read goes
//! through `bpf_probe_read_kernel`, which fails cleanly on a bad address, so a
//! wrong offset yields `None`, never a fault.

use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs},
};
use guardian_ebpf::{EXE_NAME, FileKey, Layout, abi};

use crate::LAYOUT;

/// `PF_IO_WORKER` in `task_struct.flags`: an io_uring worker thread.
const PF_IO_WORKER: u32 = 0x0000_0010;
/// `PF_KTHREAD` in `task_struct.flags`: a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;
/// `SIGNAL_GROUP_EXIT` in `signal_struct.flags`: the process is being killed.
const SIGNAL_GROUP_EXIT: u32 = 0x0000_0004;

/// CAP_SYS_PTRACE, as a bit of `cred.cap_effective`.
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// An offset or address from `LAYOUT`.
pub(crate) fn field(what: Layout) -> u64 {
    // SAFETY: the index is in bounds (`Layout::COUNT` entries); a volatile read
    // stops the compiler folding in the zeros, since the loader rewrites them.
    unsafe { core::ptr::read_volatile(&LAYOUT[what as usize]) }
}

/// Reads a `T` at a kernel address.
pub(crate) fn read<T>(address: u64) -> Option<T> {
    if address == 0 {
        return None;
    }
    // SAFETY: the helper copies from any kernel address and fails cleanly.
    unsafe { bpf_probe_read_kernel(address as *const T) }.ok()
}

/// Reads the member `what` of the struct at `base`.
fn member<T>(base: u64, what: Layout) -> Option<T> {
    if base == 0 {
        return None;
    }
    read(base.wrapping_add(field(what)))
}

/// Reads a pointer member, `None` when it is null.
fn pointer(base: u64, what: Layout) -> Option<u64> {
    member::<u64>(base, what).filter(|&p| p != 0)
}

/// The current task's `task_struct`.
pub(crate) fn current_task() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_current_task() }
}

/// The base name of `task`'s executable (its `mm->exe_file`), NUL-padded;
/// zeros for a kernel thread or where it cannot be read.
pub(crate) fn exe_name(task: u64) -> [u8; EXE_NAME] {
    let mut name = [0u8; EXE_NAME];
    let text = pointer(task, Layout::TaskMm)
        .and_then(|mm| pointer(mm, Layout::MmExeFile))
        .and_then(|file| pointer(file, Layout::FileDentry))
        .and_then(|dentry| pointer(dentry, Layout::DentryName));
    if let Some(text) = text {
        // SAFETY: the helper copies at most the buffer's length from any
        // kernel address, NUL-terminated, and fails cleanly.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(text as *const u8, &mut name) };
    }
    name
}

/// The thread group id (the process id) of a task.
pub(crate) fn task_tgid(task: u64) -> Option<u32> {
    member::<i32>(task, Layout::TaskTgid).map(|tgid| tgid as u32)
}

/// True while `task` runs a 32-bit (compat) system call.
pub(crate) fn is_compat(task: u64) -> bool {
    member::<u32>(task, Layout::TaskStatus).is_some_and(|status| status & abi::TS_COMPAT != 0)
}

/// Argument `n` of the system call whose registers are at `regs`.
pub(crate) fn syscall_arg(regs: u64, n: usize, compat: bool) -> Option<u64> {
    read(regs.wrapping_add(abi::arg_offset(n, compat)))
}

/// The task's descriptor table (`files_struct`).
pub(crate) fn files_of(task: u64) -> Option<u64> {
    pointer(task, Layout::TaskFiles)
}

/// The `struct file` behind descriptor `fd` of `task`.
pub(crate) fn fd_file(task: u64, fd: u64) -> Option<u64> {
    let fdt = pointer(files_of(task)?, Layout::FilesFdt)?;
    let max = member::<u32>(fdt, Layout::FdtMaxFds)?;
    if fd >= u64::from(max) {
        return None;
    }
    let array = pointer(fdt, Layout::FdtFd)?;
    read::<u64>(array.wrapping_add(fd * 8)).filter(|&file| file != 0)
}

/// The `read` operation of a file: it tells which kind of file it is.
pub(crate) fn file_read_op(file: u64) -> Option<u64> {
    member(pointer(file, Layout::FileOp)?, Layout::FopRead)
}

/// The file's inode as user space names it too (device and inode number).
pub(crate) fn file_key(file: u64) -> Option<FileKey> {
    let inode = pointer(file, Layout::FileInode)?;
    let device = member::<u32>(pointer(inode, Layout::InodeSb)?, Layout::SuperBlockDev)?;
    Some(FileKey {
        ino: member::<u64>(inode, Layout::InodeIno)?,
        dev: device,
        pad: 0,
    })
}

/// The process a `/proc/PID/...` (or `/proc/PID/task/TID/...`) file is about.
pub(crate) fn proc_file_target(file: u64) -> Option<u32> {
    let inode = pointer(file, Layout::FileInode)?;
    let proc_inode = inode.wrapping_sub(field(Layout::ProcInodeVfs));
    task_tgid(pid_task(pointer(proc_inode, Layout::ProcInodePid)?)?)
}

/// The process a pidfd refers to; `None` if `file` is not a pidfd.
pub(crate) fn pidfd_target(file: u64) -> Option<u32> {
    let poll = member::<u64>(pointer(file, Layout::FileOp)?, Layout::FopPoll)?;
    if poll == 0 || poll != field(Layout::PidfdPoll) {
        return None;
    }
    // pidfs (6.9+) keeps the pid in the inode; older kernels in the file.
    let pid = pointer(file, Layout::FileInode)
        .and_then(|inode| pointer(inode, Layout::InodePrivate))
        .or_else(|| pointer(file, Layout::FilePrivate))?;
    task_tgid(pid_task(pid)?)
}

/// The task a `struct pid` names, while it lives.
fn pid_task(pid: u64) -> Option<u64> {
    let first = pointer(pid, Layout::PidTasks)?;
    Some(first.wrapping_sub(field(Layout::TaskPidLinks)))
}

/// The depth of the task's pid namespace: 0 for the initial one, where a pid
/// argument is a global pid.
pub(crate) fn pid_namespace_level(task: u64) -> Option<u32> {
    member(pointer(task, Layout::TaskThreadPid)?, Layout::PidLevel)
}

/// The task `task` attached to most recently (the kernel adds a new tracee at
/// the head of `ptraced`).
pub(crate) fn newest_tracee(task: u64) -> Option<u64> {
    let head = task.wrapping_add(field(Layout::TaskPtraced));
    let next = read::<u64>(head).filter(|&next| next != 0 && next != head)?;
    Some(next.wrapping_sub(field(Layout::TaskPtraceEntry)))
}

/// True if `task` has CAP_SYS_PTRACE in the initial user namespace, which
/// lets the kernel allow it to read any process.
pub(crate) fn has_cap_sys_ptrace(task: u64) -> bool {
    let Some(cred) = pointer(task, Layout::TaskCred) else {
        return false;
    };
    let effective = member::<u64>(cred, Layout::CredCapEffective).unwrap_or(0);
    let user_ns = pointer(cred, Layout::CredUserNs);
    effective & CAP_SYS_PTRACE != 0
        && user_ns.and_then(|ns| member::<u32>(ns, Layout::UserNsLevel)) == Some(0)
}

/// True if every uid of `task` (real, saved, effective, filesystem) is
/// `uid`; false if any differs or cannot be read.
pub(crate) fn uids_are(task: u64, uid: u32) -> bool {
    pointer(task, Layout::TaskCred).is_some_and(|cred| cred_uids_are(cred, uid))
}

/// True if every uid of the credentials at `cred` is `uid`.
pub(crate) fn cred_uids_are(cred: u64, uid: u32) -> bool {
    [
        Layout::CredUid,
        Layout::CredSuid,
        Layout::CredEuid,
        Layout::CredFsuid,
    ]
    .iter()
    .all(|&which| member::<u32>(cred, which) == Some(uid))
}

/// What runs as `task`: an io_uring worker (io-wq or SQPOLL thread), a
/// kernel thread, or a user thread (which may be in a system call).
pub(crate) enum Runner {
    IoWorker,
    Kernel,
    User,
}

pub(crate) fn runner(task: u64) -> Runner {
    let flags = member::<u32>(task, Layout::TaskFlags).unwrap_or(PF_KTHREAD);
    if flags & PF_IO_WORKER != 0 {
        Runner::IoWorker
    } else if flags & PF_KTHREAD != 0 {
        Runner::Kernel
    } else {
        Runner::User
    }
}

/// True once `task`'s process is being killed (a SIGKILL is on its way).
pub(crate) fn is_dying(task: u64) -> bool {
    pointer(task, Layout::TaskSignal)
        .and_then(|signal| member::<u32>(signal, Layout::SignalFlags))
        .is_some_and(|flags| flags & SIGNAL_GROUP_EXIT != 0)
}

/// The saved user registers of the current task, whose `orig_ax` is the
/// system call it is in.
pub(crate) fn current_regs() -> Option<u64> {
    // SAFETY: the helpers take and return the current task's BTF pointers;
    // the result is only ever read through bpf_probe_read_kernel.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) };
    (regs != 0).then_some(regs as u64)
}

/// The process whose address space `mm` is, unless it is `task`'s own.
pub(crate) fn foreign_mm_owner(task: u64, mm: u64) -> Option<u32> {
    if mm == 0 || member::<u64>(task, Layout::TaskMm) == Some(mm) {
        return None;
    }
    task_tgid(pointer(mm, Layout::MmOwner)?)
}

/// The end of the current task's environment in its address space: 0 while
/// an exec has not put the new environment in place yet.
pub(crate) fn current_env_end() -> Option<u64> {
    member(pointer(current_task(), Layout::TaskMm)?, Layout::MmEnvEnd)
}

/// The file the request an io-wq worker is running works on
/// (`worker_private->cur_work`, inside its `io_kiocb`): the reference the
/// request took at submission, so no descriptor swapped in since changes
/// it. `None` where this kernel's layout lacks a step, for a worker that is
/// not io-wq's (an SQPOLL thread), and between requests.
pub(crate) fn io_worker_file(task: u64) -> Option<u64> {
    let steps = [
        Layout::TaskWorkerPrivate,
        Layout::IoWorkerTask,
        Layout::IoWorkerCurWork,
        Layout::IoKiocbWork,
    ];
    if steps.iter().any(|&step| field(step) == 0) {
        return None; // missing from BTF (none of them is a first member)
    }
    let worker = pointer(task, Layout::TaskWorkerPrivate)?;
    // `worker_private` is io-wq's only if its `io_worker` names this task.
    if pointer(worker, Layout::IoWorkerTask)? != task {
        return None;
    }
    let work = pointer(worker, Layout::IoWorkerCurWork)?;
    pointer(
        work.wrapping_sub(field(Layout::IoKiocbWork)),
        Layout::IoKiocbFile,
    )
}

/// True if `task` has used io_uring (so the kernel may issue its requests
/// as task work, in its own context). False where the kernel has no
/// io_uring.
pub(crate) fn uses_io_uring(task: u64) -> bool {
    field(Layout::TaskIoUring) != 0 && pointer(task, Layout::TaskIoUring).is_some()
}

/// The opcode of an io_uring request.
pub(crate) fn uring_opcode(request: u64) -> Option<u8> {
    member(request, Layout::IoKiocbOpcode)
}
