//! Every read path into a protected process, stopped at the raw syscall
//! tracepoints, which fire for the 64-bit, x32 and 32-bit (`int $0x80`)
//! tables alike:
//! - at entry: process_vm_readv/writev and pidfd_getfd (the caller is
//!   SIGKILLed before the call body runs, so nothing is copied);
//! - at exit: an open that returned a descriptor for a protected process's
//!   `environ` or `mem` (recognised by the file's read operation, so every
//!   path spelling is the same), and a ptrace attach that succeeded (the
//!   target resolved by the kernel, so pid namespaces and the kernel's own
//!   permission check are already accounted for). The opener never returns
//!   to user space.
//!
//! A descriptor can outlive its opener in a table shared with another
//! process (`clone(CLONE_FILES)`): the table is marked tainted, and every
//! process using it is SIGKILLed at its next system call.
//!
//! io_uring runs opens and reads in its own workers, outside any system
//! call: an io_uring open that returned a descriptor is checked at its
//! completion like a syscall open, and an io_uring worker that takes the
//! address-space lock of a ward (which every read of another process's
//! memory does, before copying a page) is SIGKILLed there, however the file
//! was opened.

use aya_ebpf::programs::{RawTracePointContext, TracePointContext};
use guardian_ebpf::{
    Layout, PTRACE_ATTACH, PTRACE_SEIZE, TamperSyscall,
    abi::{self, Call},
    flags,
};

use crate::{
    TAINT_SEEN, TAINTED, URING_REQ_OFFSET, URING_RES_OFFSET, kill_current, kmem, read_global, wards,
};

/// io_uring operations that put a new descriptor in the process's table:
/// IORING_OP_OPENAT, IORING_OP_OPENAT2, IORING_OP_FIXED_FD_INSTALL.
const URING_FD_OPS: [u8; 3] = [18, 28, 54];

/// `raw_syscalls:sys_enter`: `(struct pt_regs *regs, long id)`.
pub(crate) fn on_enter(ctx: &RawTracePointContext) {
    if any_taint() {
        stop_if_tainted();
    }
    let id: i64 = ctx.arg(1);
    if !abi::may_matter(id) {
        return;
    }
    let regs: u64 = ctx.arg(0);
    let task = kmem::current_task();
    let compat = kmem::is_compat(task);
    let flags = if compat { flags::COMPAT } else { 0 };
    match abi::classify(id, compat) {
        Some(Call::VmReadv) => by_pid(task, regs, compat, TamperSyscall::ProcessVmReadv, flags),
        Some(Call::VmWritev) => by_pid(task, regs, compat, TamperSyscall::ProcessVmWritev, flags),
        Some(Call::PidfdGetfd) => by_pidfd(task, regs, compat, flags),
        _ => {}
    }
}

/// `raw_syscalls:sys_exit`: `(struct pt_regs *regs, long ret)`.
pub(crate) fn on_exit(ctx: &RawTracePointContext) {
    let regs: u64 = ctx.arg(0);
    let Some(id) = kmem::read::<i64>(regs.wrapping_add(abi::ORIG_AX)) else {
        return;
    };
    if !abi::may_matter(id) {
        return;
    }
    let ret: i64 = ctx.arg(1);
    let task = kmem::current_task();
    let compat = kmem::is_compat(task);
    let flags = if compat { flags::COMPAT } else { 0 };
    match abi::classify(id, compat) {
        Some(Call::Open) if ret >= 0 => opened(task, ret as u64, flags),
        Some(Call::Ptrace) => attached(task, regs, compat, ret, flags),
        _ => {}
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
    let Some((_, tgid)) = kmem::fd_file(task, res as u64).and_then(ward_file) else {
        return;
    };
    if wards::stop(tgid, TamperSyscall::IoUringOpen, res as u64, 0, false) {
        taint(task, tgid);
    }
}

/// `mmap_lock_start_locking(mm, write)`: an io_uring worker locking a ward's
/// address space is about to read or write its memory.
pub(crate) fn on_mm_lock(ctx: &RawTracePointContext) {
    let task = kmem::current_task();
    if !kmem::is_io_worker(task) {
        return;
    }
    if let Some(tgid) = kmem::foreign_mm_owner(task, ctx.arg(0)) {
        wards::stop(tgid, TamperSyscall::IoUringRead, 0, 0, false);
    }
}

/// process_vm_readv/writev name their target by a pid in the caller's pid
/// namespace. Only the initial namespace's pids are global, and a BPF program
/// cannot translate others, so callers in other namespaces are left to the
/// exit-time checks (see the README's limits).
fn by_pid(task: u64, regs: u64, compat: bool, syscall: TamperSyscall, flags: u32) {
    if kmem::pid_namespace_level(task) != Some(0) {
        return;
    }
    let Some(pid) = kmem::syscall_arg(regs, 0, compat).map(|raw| raw as i32) else {
        return;
    };
    if pid > 0 {
        wards::stop(wards::thread_group_of(pid as u32), syscall, 0, flags, true);
    }
}

/// pidfd_getfd(pidfd, targetfd, flags): the pidfd names its process exactly.
fn by_pidfd(task: u64, regs: u64, compat: bool, flags: u32) {
    let Some(pidfd) = kmem::syscall_arg(regs, 0, compat).map(|raw| u64::from(raw as u32)) else {
        return;
    };
    let target_fd = kmem::syscall_arg(regs, 1, compat).unwrap_or(0) as u32;
    if let Some(tgid) = kmem::fd_file(task, pidfd).and_then(kmem::pidfd_target) {
        wards::stop(
            tgid,
            TamperSyscall::PidfdGetfd,
            u64::from(target_fd),
            flags,
            true,
        );
    }
}

/// A new descriptor: stop the opener if it is a protected process's
/// `environ` or `mem`, and taint its descriptor table.
fn opened(task: u64, fd: u64, flags: u32) {
    let Some((syscall, tgid)) = kmem::fd_file(task, fd).and_then(ward_file) else {
        return;
    };
    // The open succeeded, so the kernel allowed it: no judging needed.
    if wards::stop(tgid, syscall, fd, flags, false) {
        taint(task, tgid);
    }
}

/// For a `/proc/PID/environ` or `mem` file (recognised by its read
/// operation, whatever path reached it): which of the two, and the process
/// it is about. `None` for any other file.
fn ward_file(file: u64) -> Option<(TamperSyscall, u32)> {
    let read = kmem::file_read_op(file)?;
    let kind = if read == kmem::field(Layout::EnvironRead) {
        TamperSyscall::OpenEnviron
    } else if read == kmem::field(Layout::MemRead) {
        TamperSyscall::OpenMem
    } else {
        return None;
    };
    Some((kind, kmem::proc_file_target(file)?))
}

/// ptrace(PTRACE_ATTACH or PTRACE_SEIZE): on success the kernel has resolved
/// the pid and checked permissions, and the tracee heads the caller's list.
/// A refused attach on a ward is stopped and flagged, so it costs no secret.
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
    if kmem::pid_namespace_level(task) != Some(0) {
        return; // a refused attach by a local pid: nothing to resolve or lose
    }
    let pid = kmem::syscall_arg(regs, 1, compat).map_or(0, |raw| raw as i32);
    if pid > 0 {
        let refused = flags | flags::REFUSED_BY_KERNEL;
        wards::stop(
            wards::thread_group_of(pid as u32),
            TamperSyscall::Ptrace,
            request,
            refused,
            false,
        );
    }
}

/// The `TAINT_SEEN` flag: set here when a table is tainted, cleared by the
/// guardian once `TAINTED` is empty, so that without taint the per-syscall
/// cost is one array read.
fn any_taint() -> bool {
    // SAFETY: the pointer came from a lookup of slot 0, which exists.
    TAINT_SEEN
        .get_ptr(0)
        .is_some_and(|seen| unsafe { *seen } != 0)
}

/// Marks `task`'s descriptor table tainted, if another process shares it:
/// otherwise it dies with the opener and its threads, all SIGKILLed.
fn taint(task: u64, tgid: u32) {
    let Some(files) = kmem::files_of(task) else {
        return;
    };
    if !kmem::shares_files_outside(task, files) {
        return;
    }
    if TAINTED.insert(files, tgid, 0).is_err() {
        // Map full: a sharer could go unseen, which is a lost event.
        crate::count_dropped();
    }
    if let Some(seen) = TAINT_SEEN.get_ptr_mut(0) {
        // SAFETY: slot 0 exists; a racing write stores the same value.
        unsafe { *seen = 1 };
    }
}

/// SIGKILLs the current process if its descriptor table is tainted.
fn stop_if_tainted() {
    let Some(files) = kmem::files_of(kmem::current_task()) else {
        return;
    };
    // SAFETY: the pointer came from a map lookup in this program run; entries are u32.
    if let Some(tgid) = TAINTED.get_ptr(files).map(|tgid| unsafe { *tgid }) {
        kill_current();
        wards::report(tgid, TamperSyscall::TaintedTable, 0, 0);
    }
}

/// Called as each thread exits: forgets a tainted table its last user is
/// leaving, so the address can be reused by an unrelated table. A thread
/// that has passed this point but not yet dropped the table still counts,
/// so two users leaving at once can leave a stale entry: a process that
/// later gets a table at the same address would be killed at a syscall (and
/// audited); no secret is wiped for it (see the guardian's tamper handling).
pub(crate) fn untaint_if_last() {
    if !any_taint() {
        return;
    }
    let Some(files) = kmem::files_of(kmem::current_task()) else {
        return;
    };
    if TAINTED.get_ptr(files).is_some() && kmem::files_users(files).is_some_and(|users| users <= 1)
    {
        let _ = TAINTED.remove(files);
    }
}
