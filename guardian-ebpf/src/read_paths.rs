//! Every read path into a protected process, stopped where the kernel
//! would carry it out:
//! - at syscall exit: a ptrace attach, pidfd_getfd or perf_event_open that
//!   succeeded on a ward (the target resolved and the permission checked by
//!   the kernel, so pid namespaces and the kernel's own refusal are already
//!   accounted for), an open that returned a descriptor for a ward's
//!   `environ` or `mem` (recognised by the file's read operation, so every
//!   path spelling is the same) or for a secret file outside its grant, and
//!   a holder's change of uid. The caller never returns to user space. Run
//!   from the per-call `syscalls:sys_exit_*` tracepoints (64-bit table, the
//!   cheap form), or from `raw_syscalls:sys_exit` for every table;
//! - at syscall entry (raw tracepoint), only where the address-space lock
//!   program is not in force: process_vm_readv/writev aimed at a ward;
//! - at a ward's address-space lock, which every read of another process's
//!   memory takes before it copies a page: a read or write through a ward's
//!   `environ` or `mem` whoever holds the descriptor (a racing thread, a
//!   `clone(CLONE_FILES)` sharer, an SCM_RIGHTS recipient, an io_uring
//!   open), process_vm_* and ptrace from any pid namespace and any syscall
//!   table, and anything an io_uring worker does;
//! - at io_uring completion: an io_uring open that returned a descriptor;
//! - at both opens, a secret delivered as a file (`exec --file`) opened by
//!   a process outside the grant it was given to.

use aya_ebpf::programs::{RawTracePointContext, TracePointContext};
use guardian_ebpf::{
    Layout, PTRACE_ATTACH, PTRACE_SEIZE, TamperSyscall,
    abi::{self, Call, Reach},
    flags,
};

use crate::{
    SECRET_FILES, URING_REQ_OFFSET, URING_RES_OFFSET, environ, kill_current, kmem, read_global,
    wards,
};

/// io_uring operations that put a new descriptor in the process's table:
/// IORING_OP_OPENAT, IORING_OP_OPENAT2, IORING_OP_FIXED_FD_INSTALL.
const URING_FD_OPS: [u8; 3] = [18, 28, 54];

/// `raw_syscalls:sys_enter`: `(struct pt_regs *regs, long id)`. Attached
/// only where the address-space-lock program is not, which otherwise stops
/// process_vm_readv/writev before their first page.
pub(crate) fn on_enter(ctx: &RawTracePointContext) {
    let id: i64 = ctx.arg(1);
    if !abi::may_matter(id) {
        return;
    }
    let regs: u64 = ctx.arg(0);
    let task = kmem::current_task();
    let (compat, flags) = table_of(task);
    match abi::classify(id, compat) {
        Some(Call::VmReadv) => by_pid(task, regs, compat, TamperSyscall::ProcessVmReadv, flags),
        Some(Call::VmWritev) => by_pid(task, regs, compat, TamperSyscall::ProcessVmWritev, flags),
        _ => {}
    }
}

/// Whether `task`'s current system call came through the 32-bit table, and
/// the event flags that say so.
fn table_of(task: u64) -> (bool, u32) {
    match kmem::is_compat(task) {
        true => (true, flags::COMPAT),
        false => (false, 0),
    }
}

/// `raw_syscalls:sys_exit`: `(struct pt_regs *regs, long ret)`, for every
/// system call of every table.
pub(crate) fn on_raw_exit(ctx: &RawTracePointContext) {
    let regs: u64 = ctx.arg(0);
    exited(regs, ctx.arg(1));
}

/// `syscalls:sys_exit_*` of the calls `abi::classify` names: the kernel runs
/// these for the 64-bit table only, and for no other call, so they cost the
/// rest of the machine's system calls only the slow path itself.
pub(crate) fn on_exit_64(_ctx: &TracePointContext) {
    let Some(regs) = kmem::current_regs() else {
        return;
    };
    // At exit the return value is in the saved `ax`.
    if let Some(ret) = kmem::read::<i64>(regs.wrapping_add(abi::AX)) {
        exited(regs, ret);
    }
}

/// The system call whose registers are at `regs` returned `ret`.
fn exited(regs: u64, ret: i64) {
    let Some(id) = kmem::read::<i64>(regs.wrapping_add(abi::ORIG_AX)) else {
        return;
    };
    if !abi::may_matter(id) {
        return;
    }
    let task = kmem::current_task();
    let (compat, flags) = table_of(task);
    match abi::classify(id, compat) {
        Some(Call::Open) if ret >= 0 => opened(task, ret as u64, flags),
        Some(Call::Ptrace) => attached(task, regs, compat, ret, flags),
        Some(Call::PidfdGetfd) => by_pidfd(task, regs, compat, ret, flags),
        Some(Call::PerfEventOpen) => by_perf_target(task, regs, compat, ret, flags),
        Some(Call::Credentials) if ret >= 0 => wards::check_uids(task, flags),
        Some(Call::Limits) if ret >= 0 => limits_set(task, regs, compat),
        _ => {}
    }
}

/// prlimit64(pid, resource, new, old) returned: if it set the limits of
/// another process, a session ward changed from outside is marked.
fn limits_set(task: u64, regs: u64, compat: bool) {
    if kmem::syscall_arg(regs, 2, compat).unwrap_or(0) == 0 {
        return; // it only read them
    }
    if let Some(tgid) = pid_argument(task, regs, 0, compat) {
        wards::taint_cores(tgid);
    }
}

/// `io_uring:io_uring_complete`: a request finished with result `res`.
pub(crate) fn on_uring_complete(ctx: &TracePointContext) {
    let (req_at, res_at) = (
        read_global(&URING_REQ_OFFSET),
        read_global(&URING_RES_OFFSET),
    );
    if req_at == guardian_ebpf::NO_FIELD || res_at == guardian_ebpf::NO_FIELD {
        return;
    }
    // SAFETY: the offsets come from this kernel's tracefs format for this tracepoint.
    let (Ok(request), Ok(res)) = (unsafe { ctx.read_at::<u64>(req_at as usize) }, unsafe {
        ctx.read_at::<i32>(res_at as usize)
    }) else {
        return;
    };
    if res < 0 || !kmem::uring_opcode(request).is_some_and(|op| URING_FD_OPS.contains(&op)) {
        return;
    }
    // The worker or submitter shares the ring owner's descriptor table.
    let task = kmem::current_task();
    let Some(file) = kmem::fd_file(task, res as u64) else {
        return;
    };
    let syscall = |opened| match opened {
        TamperSyscall::OpenEnviron => TamperSyscall::IoUringOpenEnviron,
        _ => TamperSyscall::IoUringOpen,
    };
    match ward_file(file) {
        Some((opened, tgid)) => _ = wards::stop(tgid, syscall(opened), res as u64, 0, false),
        None => secret_file_opened(file, 0),
    }
}

/// `mmap_lock_start_locking(mm, write)`: every read of another process's
/// memory takes that process's address-space lock before it copies a page.
/// Taken on a ward's by someone who may not reach it, it is stopped here,
/// with the SIGKILL pending before the first page: by an io_uring request
/// or a system call that reads or writes through a ward's `environ` or `mem`
/// (however the descriptor was obtained: a racing thread, a sharer,
/// SCM_RIGHTS, an io_uring open), or by process_vm_readv/writev or ptrace
/// (in any pid namespace). Other calls that take the lock, such as a read of
/// `/proc/PID/cmdline` by `ps`, or of an environment that holds no value,
/// pass.
pub(crate) fn on_mm_lock(ctx: &RawTracePointContext) {
    let task = kmem::current_task();
    let Some(tgid) = kmem::foreign_mm_owner(task, ctx.arg(0)) else {
        return;
    };
    if kmem::is_dying(task) {
        return; // already stopped, and reported, by an earlier check
    }
    match kmem::runner(task) {
        kmem::Runner::IoWorker => worker_request(task, tgid),
        kmem::Runner::User => reaching_syscall(task, tgid),
        kmem::Runner::Kernel => {}
    }
}

/// Stops the request an io_uring worker runs if it reads or writes through
/// `tgid`'s `environ` or `mem`; a request whose file cannot be told is
/// stopped too.
fn worker_request(task: u64, tgid: u32) {
    let Some(file) = kmem::io_worker_file(task) else {
        wards::stop(tgid, TamperSyscall::IoUringRead, 0, 0, false);
        return;
    };
    let syscall = match reaching_file(file, tgid) {
        Some(TamperSyscall::OpenEnviron) => TamperSyscall::ReadEnviron,
        Some(_) => TamperSyscall::IoUringRead,
        None => return, // cmdline, maps, an environment that holds no value
    };
    wards::stop(tgid, syscall, 0, 0, false);
}

/// Stops the current system call if it reaches into `tgid`'s memory.
fn reaching_syscall(task: u64, tgid: u32) {
    let Some(regs) = kmem::current_regs() else {
        return;
    };
    let Some(id) = kmem::read::<i64>(regs.wrapping_add(abi::ORIG_AX)) else {
        return;
    };
    let (compat, flags) = table_of(task);
    match abi::reach(id, compat) {
        Some(Reach::Process) => {
            let syscall = match abi::classify(id, compat) {
                Some(Call::VmReadv) => TamperSyscall::ProcessVmReadv,
                Some(Call::VmWritev) => TamperSyscall::ProcessVmWritev,
                _ => TamperSyscall::MemoryAccess,
            };
            wards::stop(tgid, syscall, id as u64, flags, false);
        }
        Some(Reach::Files(first, second)) => {
            let through_ward = |index: usize| {
                kmem::syscall_arg(regs, index, compat)
                    .and_then(|fd| kmem::fd_file(task, u64::from(fd as u32)))
                    .and_then(|file| reaching_file(file, tgid))
            };
            let Some(opened) = through_ward(first).or_else(|| second.and_then(through_ward)) else {
                uring_request(task, tgid, id, flags);
                return;
            };
            // Named apart, as at the open: an environment read may be
            // answered more mildly (`on_environ_read`).
            let syscall = match opened {
                TamperSyscall::OpenEnviron => TamperSyscall::ReadEnviron,
                _ => TamperSyscall::ProcRead,
            };
            wards::stop(tgid, syscall, id as u64, flags, false);
        }
        None => uring_request(task, tgid, id, flags),
    }
}

/// The lock was taken, and the current call does not explain it, by a
/// process that has used io_uring: the kernel runs a request in the
/// submitter's own context, inline in io_uring_enter (a non-blocking read)
/// or as task work (a read linked behind one that waited) under whichever
/// call the process was making, and which file it reads is not told here.
/// No everyday tool reads another session's process files through
/// io_uring, so the request is stopped.
fn uring_request(task: u64, tgid: u32, id: i64, flags: u32) {
    if kmem::uses_io_uring(task) {
        wards::stop(tgid, TamperSyscall::IoUringRead, id as u64, flags, false);
    }
}

/// process_vm_readv/writev name their target by a pid in the caller's pid
/// namespace; callers in other namespaces are stopped at the address-space
/// lock instead (`on_mm_lock`).
fn by_pid(task: u64, regs: u64, compat: bool, syscall: TamperSyscall, flags: u32) {
    if let Some(tgid) = pid_argument(task, regs, 0, compat) {
        wards::stop(tgid, syscall, 0, flags, true);
    }
}

/// The process named by pid argument `index`, when the caller is in the
/// initial pid namespace (the only one whose pids are global; a BPF program
/// cannot translate others) and the pid names one process.
fn pid_argument(task: u64, regs: u64, index: usize, compat: bool) -> Option<u32> {
    if kmem::pid_namespace_level(task) != Some(0) {
        return None;
    }
    let pid = kmem::syscall_arg(regs, index, compat)? as i32;
    (pid > 0).then(|| wards::thread_group_of(pid as u32))
}

/// perf_event_open(attr, pid, cpu, group_fd, flags): a positive pid names
/// the process to sample (its registers and user stack), in the caller's pid
/// namespace.
fn by_perf_target(task: u64, regs: u64, compat: bool, ret: i64, flags: u32) {
    if let Some(tgid) = pid_argument(task, regs, 1, compat) {
        succeeded_on(tgid, TamperSyscall::PerfEventOpen, 0, ret, flags);
    }
}

/// pidfd_getfd(pidfd, targetfd, flags): the pidfd names its process exactly.
fn by_pidfd(task: u64, regs: u64, compat: bool, ret: i64, flags: u32) {
    let Some(pidfd) = kmem::syscall_arg(regs, 0, compat).map(|raw| u64::from(raw as u32)) else {
        return;
    };
    let target_fd = kmem::syscall_arg(regs, 1, compat).unwrap_or(0) as u32;
    let request = u64::from(target_fd);
    match kmem::fd_file(task, pidfd) {
        Some(file) => {
            if let Some(tgid) = kmem::pidfd_target(file) {
                succeeded_on(tgid, TamperSyscall::PidfdGetfd, request, ret, flags);
            }
        }
        // The pidfd was closed while the call ran: which process it named
        // cannot be told any more, so a descriptor it took is not kept.
        None if ret >= 0 => kill_current(),
        None => {}
    }
}

/// A call on `tgid` returned `ret`: on success the caller is stopped before
/// it returns to user space; a call the kernel refused costs no secret, so
/// the caller keeps the kernel's error, as any process would, and the
/// attempt is only reported.
fn succeeded_on(tgid: u32, syscall: TamperSyscall, request: u64, ret: i64, flags: u32) {
    match ret >= 0 {
        true => _ = wards::stop(tgid, syscall, request, flags, false),
        false => wards::report_refused(tgid, syscall, request, flags),
    }
}

/// A new descriptor: stop the opener if it is a protected process's
/// `environ` or `mem`, or a secret file of a grant it is not in.
fn opened(task: u64, fd: u64, flags: u32) {
    let Some(file) = kmem::fd_file(task, fd) else {
        return;
    };
    match ward_file(file) {
        // The open succeeded, so the kernel allowed it: no judging needed.
        Some((syscall, tgid)) => _ = wards::stop(tgid, syscall, fd, flags, false),
        None => secret_file_opened(file, flags),
    }
}

/// Stops the current process if `file` is a secret delivered as a file
/// (`exec --file`) to a grant it is not in. Reopening a holder's memfd
/// through `/proc/HOLDER/fd/N` passes the kernel's ptrace check for the same
/// user, so this is where it is stopped.
fn secret_file_opened(file: u64, flags: u32) {
    if let Some(grant) = secret_file_grant(file) {
        wards::stop_outside_grant(grant, flags);
    }
}

/// The grant `file` was given to, if it is a secret delivered as a file.
pub(crate) fn secret_file_grant(file: u64) -> Option<u32> {
    let key = kmem::file_key(file)?;
    // SAFETY: the pointer came from a map lookup in this program run; entries are u32.
    SECRET_FILES.get_ptr(&key).map(|grant| unsafe { *grant })
}

/// For a `/proc/PID/environ` or `mem` file (recognised by its read
/// operation, whatever path reached it): which of the two, and the process
/// it is about. `None` for any other file, and for an environment that
/// cannot hold a secret.
pub(crate) fn ward_file(file: u64) -> Option<(TamperSyscall, u32)> {
    let kind = proc_memory_file(file)?;
    let target = kmem::proc_file_target(file)?;
    (!harmless(kind, target)).then_some((kind, target))
}

/// At `tgid`'s address-space lock: which of `environ` or `mem` `file` is, if
/// it is one about `tgid` that may hold a secret. A file of a thread that
/// has exited since the open still reads its process's memory (the file
/// holds the address space), so one whose process cannot be told is taken
/// to be about `tgid`, whose lock is being taken.
fn reaching_file(file: u64, tgid: u32) -> Option<TamperSyscall> {
    let kind = proc_memory_file(file)?;
    let target = kmem::proc_file_target(file).unwrap_or(tgid);
    (target == tgid && !harmless(kind, target)).then_some(kind)
}

/// Whether `file` is a `/proc/PID/environ` or `mem` file, and which.
fn proc_memory_file(file: u64) -> Option<TamperSyscall> {
    let read = kmem::file_read_op(file)?;
    if read == kmem::field(Layout::EnvironRead) {
        Some(TamperSyscall::OpenEnviron)
    } else if read == kmem::field(Layout::MemRead) {
        Some(TamperSyscall::OpenMem)
    } else {
        None
    }
}

/// True for the environment of a process that cannot hold a secret.
fn harmless(kind: TamperSyscall, target: u32) -> bool {
    kind == TamperSyscall::OpenEnviron && !environ::may_hold_secret(target)
}

/// ptrace(PTRACE_ATTACH or PTRACE_SEIZE): on success the kernel has resolved
/// the pid and checked permissions, and the tracee heads the caller's list.
/// A refused attach on a ward is only reported, flagged: it costs no secret.
fn attached(task: u64, regs: u64, compat: bool, ret: i64, flags: u32) {
    let request = kmem::syscall_arg(regs, 0, compat).unwrap_or(0) & 0xffff_ffff;
    if request != PTRACE_ATTACH && request != PTRACE_SEIZE {
        return;
    }
    if ret == 0 {
        if let Some(tgid) = kmem::newest_tracee(task).and_then(kmem::task_tgid) {
            wards::stop(tgid, TamperSyscall::Ptrace, request, flags, false);
        }
        return;
    }
    // A refused attach by a local pid has nothing to resolve.
    if let Some(tgid) = pid_argument(task, regs, 1, compat) {
        wards::report_refused(tgid, TamperSyscall::Ptrace, request, flags);
    }
}
