//! The eBPF programs: classic tracepoints that watch bound session leaders and
//! the processes holding their secrets, stop anyone who ptraces or
//! process_vm_reads/writes a holder or the guardian, and report through a ring
//! buffer.
//!
//! Classic tracepoints were chosen because they load on every kernel the guardian
//! targets (BPF LSM and fentry need trampolines that are often unavailable) and
//! because their fields are plain integers at offsets tracefs publishes, so no
//! kernel struct layout is compiled in. The guardian passes those offsets as
//! globals before loading.

#![no_std]
#![no_main]
#![expect(
    missing_docs,
    reason = "the tracepoint macro wraps each program in an undocumented function"
)]

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        generated::bpf_send_signal,
    },
    macros::{lsm, map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{LsmContext, TracePointContext},
};
use guardian_ebpf::{
    Event, EventKind, MAX_TRACKED, NO_FIELD, PTRACE_TRACEME, RING_BYTES, TamperSyscall,
    holder_grant, holder_is_doomed,
};

const SIGHUP: i32 = 1;
const SIGKILL: u32 = 9;
const CLONE_THREAD: u64 = 0x0001_0000;

// Globals set by the guardian at load time (see `guardian_ebpf::globals`). The
// defaults are the offsets of Linux 6.18 and are always overwritten.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = 32;
#[unsafe(no_mangle)]
static NEWTASK_PID_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static NEWTASK_CLONE_FLAGS_OFFSET: u32 = 32;
#[unsafe(no_mangle)]
static SIGNAL_SIG_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static SIGNAL_PID_OFFSET: u32 = 36;
#[unsafe(no_mangle)]
static PTRACE_REQUEST_OFFSET: u32 = 16;
#[unsafe(no_mangle)]
static PTRACE_PID_OFFSET: u32 = 24;
#[unsafe(no_mangle)]
static VM_PID_OFFSET: u32 = 16;
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = NO_FIELD;

const EPERM: i32 = 1;
/// PTRACE_MODE_NOAUDIT: a check whose failure the kernel tolerates quietly
/// (/proc/PID/stat asks this way for fields like wchan); not an attack.
const PTRACE_MODE_NOAUDIT: u32 = 0x04;

// Map statics carry the names in `guardian_ebpf::maps`.
#[map]
static LEADERS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
static HOLDERS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
static PROTECTED: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);
#[map]
static THREADS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map]
static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `sched:sched_process_exit`, once per exiting thread.
#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    try_process_exit(&ctx).unwrap_or(0)
}

/// `task:task_newtask`, in the parent's context, after the point where the new
/// task can no longer fail to be created.
#[tracepoint]
pub fn new_task(ctx: TracePointContext) -> u32 {
    try_new_task(&ctx).unwrap_or(0)
}

/// `signal:signal_generate`, for every signal sent to every task.
#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    try_signal_generate(&ctx).unwrap_or(0)
}

/// `syscalls:sys_enter_ptrace`.
#[tracepoint]
pub fn ptrace_enter(ctx: TracePointContext) -> u32 {
    try_ptrace_enter(&ctx).unwrap_or(0)
}

/// `syscalls:sys_enter_process_vm_readv`.
#[tracepoint]
pub fn vm_readv_enter(ctx: TracePointContext) -> u32 {
    try_vm_enter(&ctx, TamperSyscall::ProcessVmReadv as u32).unwrap_or(0)
}

/// `syscalls:sys_enter_process_vm_writev`.
#[tracepoint]
pub fn vm_writev_enter(ctx: TracePointContext) -> u32 {
    try_vm_enter(&ctx, TamperSyscall::ProcessVmWritev as u32).unwrap_or(0)
}

/// BPF LSM `ptrace_access_check(struct task_struct *child, unsigned int mode)`:
/// every ptrace_may_access in the kernel, so also /proc/PID/mem and environ
/// and pidfd_getfd. Refuses (-EPERM) access to a holder or protected process
/// by anyone but itself and the guardian. Needs a kernel with CONFIG_BPF_LSM
/// and `bpf` in the active LSM list (5.7+).
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    try_ptrace_access_check(&ctx).unwrap_or(0)
}

fn try_ptrace_access_check(ctx: &LsmContext) -> Result<i32, i64> {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return Ok(previous); // an earlier LSM already refused: keep its verdict
    }
    let mode: u32 = ctx.arg(1);
    let offset = read_global(&TASK_TGID_OFFSET);
    if mode & PTRACE_MODE_NOAUDIT != 0 || offset == NO_FIELD {
        return Ok(0);
    }
    let child: *const u8 = ctx.arg(0);
    // SAFETY: `child` is the task the hook was called for, and the offset of
    // `tgid` in task_struct comes from this kernel's BTF; the helper copies
    // safely even from a bad address.
    let tgid: i32 = unsafe { bpf_probe_read_kernel(child.add(offset as usize).cast::<i32>()) }
        .map_err(i64::from)?;
    let tgid = tgid as u32;
    if HOLDERS.get_ptr(tgid).is_none() && PROTECTED.get_ptr(tgid).is_none() {
        return Ok(0);
    }
    let (caller, _) = current_ids();
    if caller == tgid || PROTECTED.get_ptr(caller).is_some() {
        return Ok(0); // itself, or the guardian reading /proc/PID/exe
    }
    emit(Event {
        pid: caller,
        other: tgid,
        syscall: TamperSyscall::PtraceAccessCheck as u32,
        request: u64::from(mode),
        ..caller_event(EventKind::Tamper)
    });
    Ok(-EPERM)
}

fn try_process_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if tid != tgid && THREADS.get_ptr(tid).is_some() {
        let _ = THREADS.remove(tid);
    }
    if !is_group_dead(ctx, tgid, tid)? {
        return Ok(0);
    }
    if LEADERS.get_ptr(tgid).is_some() {
        emit(Event {
            kind: EventKind::LeaderExit as u32,
            pid: tgid,
            ktime_ns: now(),
            ..Event::EMPTY
        });
    }
    if HOLDERS.get_ptr(tgid).is_some() {
        let _ = HOLDERS.remove(tgid);
        emit(Event {
            kind: EventKind::HolderExit as u32,
            pid: tgid,
            ktime_ns: now(),
            ..Event::EMPTY
        });
    }
    Ok(0)
}

/// True when the exiting thread is the last of its process. Kernels without the
/// `group_dead` field fall back to "the main thread exits", which errs early.
fn is_group_dead(ctx: &TracePointContext, tgid: u32, tid: u32) -> Result<bool, i64> {
    let offset = read_global(&EXIT_GROUP_DEAD_OFFSET);
    if offset == NO_FIELD {
        return Ok(tgid == tid);
    }
    // SAFETY: the offset comes from this kernel's tracefs format for this tracepoint.
    let group_dead: u8 = unsafe { ctx.read_at(offset as usize)? };
    Ok(group_dead != 0)
}

fn try_new_task(ctx: &TracePointContext) -> Result<u32, i64> {
    let (parent, _) = current_ids();
    let holder = HOLDERS.get_ptr(parent);
    if holder.is_none() && PROTECTED.get_ptr(parent).is_none() {
        return Ok(0);
    }
    // SAFETY: offsets come from this kernel's tracefs format for this tracepoint.
    let flags: u64 = unsafe { ctx.read_at(read_global(&NEWTASK_CLONE_FLAGS_OFFSET) as usize)? };
    // SAFETY: as above.
    let child: i32 = unsafe { ctx.read_at(read_global(&NEWTASK_PID_OFFSET) as usize)? };
    if flags & CLONE_THREAD != 0 {
        // A thread is part of its process; remember it so attacks on it count.
        if THREADS.insert(child as u32, parent, 0).is_err() {
            kill_current();
        }
        return Ok(0);
    }
    let Some(value) = holder else {
        return Ok(0); // a protected process's children are not protected
    };
    // SAFETY: the pointer came from a map lookup in this program run; entries are u64.
    let value = unsafe { *value };
    let child = child as u32;
    if HOLDERS.insert(child, value, 0).is_err() {
        // Map full: the child would be untracked, so doom its parent instead.
        kill_current();
    }
    if holder_is_doomed(value) {
        kill_current();
    }
    emit(Event {
        kind: EventKind::HolderFork as u32,
        pid: child,
        other: parent,
        grant: holder_grant(value),
        ktime_ns: now(),
        ..Event::EMPTY
    });
    Ok(0)
}

fn try_signal_generate(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: offsets come from this kernel's tracefs format for this tracepoint.
    let sig: i32 = unsafe { ctx.read_at(read_global(&SIGNAL_SIG_OFFSET) as usize)? };
    if sig != SIGHUP {
        return Ok(0);
    }
    // SAFETY: as above.
    let target: i32 = unsafe { ctx.read_at(read_global(&SIGNAL_PID_OFFSET) as usize)? };
    let target = target as u32;
    if LEADERS.get_ptr(target).is_some() {
        emit(Event {
            pid: target,
            other: ctx.tgid(),
            ..caller_event(EventKind::LeaderHangup)
        });
    }
    Ok(0)
}

fn try_ptrace_enter(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: offsets come from this kernel's tracefs format for this tracepoint.
    let request: u64 = unsafe { ctx.read_at(read_global(&PTRACE_REQUEST_OFFSET) as usize)? };
    if request == PTRACE_TRACEME {
        return Ok(0);
    }
    // SAFETY: as above.
    let target: i64 = unsafe { ctx.read_at(read_global(&PTRACE_PID_OFFSET) as usize)? };
    stop_if_protected(target, TamperSyscall::Ptrace as u32, request);
    Ok(0)
}

fn try_vm_enter(ctx: &TracePointContext, syscall: u32) -> Result<u32, i64> {
    // SAFETY: offsets come from this kernel's tracefs format for this tracepoint.
    let target: i64 = unsafe { ctx.read_at(read_global(&VM_PID_OFFSET) as usize)? };
    stop_if_protected(target, syscall, 0);
    Ok(0)
}

/// SIGKILLs the caller if `target` (a pid or a thread id) is a holder or a
/// protected process. The signal is pending before the syscall body runs, so
/// ptrace attach fails and process_vm_readv copies nothing.
fn stop_if_protected(target: i64, syscall: u32, request: u64) {
    if target <= 0 || target > i64::from(i32::MAX) {
        return;
    }
    let target = target as u32;
    // SAFETY: the pointer came from a map lookup in this program run; entries are u32.
    let tgid = THREADS
        .get_ptr(target)
        .map_or(target, |tgid| unsafe { *tgid });
    if HOLDERS.get_ptr(tgid).is_none() && PROTECTED.get_ptr(tgid).is_none() {
        return;
    }
    let (caller, _) = current_ids();
    if caller == tgid {
        return; // a process inspecting itself reads nothing it does not have
    }
    kill_current();
    emit(Event {
        pid: caller,
        other: tgid,
        syscall,
        request,
        ..caller_event(EventKind::Tamper)
    });
}

/// An event of `kind` carrying the current task's uid, comm and the time.
fn caller_event(kind: EventKind) -> Event {
    let uid_gid = bpf_get_current_uid_gid();
    Event {
        kind: kind as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        ktime_ns: now(),
        ..Event::EMPTY
    }
}

/// Writes an event, or counts it in `DROPPED` when the ring buffer is full.
fn emit(event: Event) {
    if EVENTS.output::<Event>(&event, 0).is_err()
        && let Some(count) = DROPPED.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot 0 exists (max_entries 1) and no one else writes it on this CPU now.
        unsafe { *count += 1 };
    }
}

fn kill_current() {
    // SAFETY: bpf_send_signal only signals the current task; any error is ignored
    // because the guardian also kills every holder it learns of.
    let _ = unsafe { bpf_send_signal(SIGKILL) };
}

fn current_ids() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

fn now() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

fn read_global(global: &'static u32) -> u32 {
    // SAFETY: the reference is valid; a volatile read stops the compiler folding
    // in the default value, since the loader rewrites it in the object.
    unsafe { core::ptr::read_volatile(global) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
