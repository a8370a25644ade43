//! The eBPF programs: classic tracepoints that watch bound session leaders and
//! the processes holding their secrets (this file), system-call, BPF LSM and
//! address-space-lock programs that stop every read path into a protected
//! process (`read_paths`, `lsm`), the
//! rules of who is protected from whom (`wards`), and a BTF tracepoint that
//! kills a leader's newest holder at the leader's exit, from the kernel
//! (`early_kill`). Events go to the guardian through ring buffers.
//!
//! Tracepoints were chosen because they load on every kernel the guardian
//! targets (BPF LSM and fentry need trampolines that are often unavailable).
//! No kernel struct layout is compiled in: the guardian passes tracepoint field
//! offsets (from tracefs) and struct member offsets (from BTF) as globals
//! before loading, and `kmem` reads kernel memory through them.

#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
#![expect(
    missing_docs,
    reason = "the tracepoint macro wraps each program in an undocumented function"
)]

mod early_kill;
mod environ;
mod kmem;
mod lsm;
mod rate;
mod read_paths;
mod wards;

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        generated::bpf_send_signal,
    },
    macros::{lsm, map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::{LsmContext, RawTracePointContext, TracePointContext},
};
use guardian_ebpf::{
    ENVIRON_RING_BYTES, Event, EventKind, FileKey, LEADER_HUNG_UP, LEADER_WATCHED, Layout,
    MAX_RATED_UIDS, MAX_TRACKED, NO_FIELD, PROTECTED_GUARDIAN, RING_BYTES, RateWindow,
    TAMPER_RING_BYTES, holder_grant, holder_is_doomed,
};

const SIGHUP: i32 = 1;
/// The signals whose default action dumps core: SIGQUIT, SIGILL, SIGTRAP,
/// SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGXCPU, SIGXFSZ, SIGSYS (bit n is
/// signal n).
const CORE_SIGNALS: u64 = (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 11)
    | (1 << 24)
    | (1 << 25)
    | (1 << 31);
/// `SIG_DFL` as `sa_handler`.
const SIG_DFL: u64 = 0;
/// `BPF_RB_FORCE_WAKEUP`: wake the reader now, whatever the ring's notification policy.
const BPF_RB_FORCE_WAKEUP: u64 = 2;
pub(crate) const SIGKILL: u32 = 9;
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
static DELIVER_SIG_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static DELIVER_HANDLER_OFFSET: u32 = 24;
#[unsafe(no_mangle)]
static TAMPER_BURST_PER_CPU: u32 = 1;
#[unsafe(no_mangle)]
static URING_REQ_OFFSET: u32 = NO_FIELD;
#[unsafe(no_mangle)]
static URING_RES_OFFSET: u32 = NO_FIELD;

/// Kernel offsets and addresses, indexed by [`Layout`]; read through `kmem`.
#[unsafe(no_mangle)]
static LAYOUT: [u64; Layout::COUNT] = [0; Layout::COUNT];

// Map statics carry the names in `guardian_ebpf::maps`.
#[map]
pub(crate) static LEADERS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
pub(crate) static HOLDERS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
pub(crate) static EARLY_KILL: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
static GRANT_OWNERS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
pub(crate) static SECRET_FILES: HashMap<FileKey, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
pub(crate) static PROTECTED: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);
#[map]
static THREADS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
pub(crate) static WARDS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map]
static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
static GUARDIAN_DEATH: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
static HOLDER_EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map]
static HOLDER_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
static TAMPER_EVENTS: RingBuf = RingBuf::with_byte_size(TAMPER_RING_BYTES, 0);
#[map]
static TAMPER_RATE: LruPerCpuHashMap<u32, RateWindow> =
    LruPerCpuHashMap::with_max_entries(MAX_RATED_UIDS, 0);
#[map]
static TAMPER_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static ENVIRON_STAMPS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_TRACKED, 0);
#[map]
pub(crate) static CLEAN_ENVIRONS: LruHashMap<u64, u32> =
    LruHashMap::with_max_entries(MAX_TRACKED, 0);
/// Wards sent a core-dumping signal from outside their session, until they
/// exit: they die of SIGKILL instead of dumping core. Room for every ward
/// (`WARDS` and `HOLDERS`), and not LRU, so no flood of signals can evict a
/// mark; only a ward's exit removes its own.
#[map]
pub(crate) static FORCED_CORES: HashMap<u32, u32> = HashMap::with_max_entries(2 * MAX_TRACKED, 0);
#[map]
pub(crate) static ENVIRON_EVENTS: RingBuf = RingBuf::with_byte_size(ENVIRON_RING_BYTES, 0);

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

/// `task:task_rename`, each time a task's name is set (every exec does).
#[tracepoint]
pub fn task_rename(_ctx: TracePointContext) -> u32 {
    environ::renamed();
    0
}

/// `sched:sched_process_exec`, once per successful exec, from any syscall
/// table, before the new program runs: a holder that exec'd a set-uid
/// program is stopped here.
#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    wards::check_uids(kmem::current_task(), 0);
    environ::exec_done();
    0
}

/// `signal:signal_generate`, for every signal sent to every task.
#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    try_signal_generate(&ctx).unwrap_or(0)
}

/// `signal:signal_deliver`, for every signal a task is about to act on.
#[tracepoint]
pub fn signal_deliver(ctx: TracePointContext) -> u32 {
    try_signal_deliver(&ctx).unwrap_or(0)
}

/// `raw_syscalls:sys_enter`, for every system call on the machine, while
/// armed where the address-space-lock program is not in force.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn syscall_enter(ctx: RawTracePointContext) -> i32 {
    read_paths::on_enter(&ctx);
    0
}

/// `raw_syscalls:sys_exit`, for every system call on the machine, while
/// armed to watch every syscall table.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn syscall_exit(ctx: RawTracePointContext) -> i32 {
    read_paths::on_raw_exit(&ctx);
    0
}

/// `syscalls:sys_exit_*` of the few calls the read paths judge, 64-bit
/// table, while armed in the cheap form: one program, one link per call.
#[tracepoint]
pub fn syscall_exit_64(ctx: TracePointContext) -> u32 {
    read_paths::on_exit_64(&ctx);
    0
}

/// `io_uring:io_uring_complete`, for every io_uring completion while armed.
#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    read_paths::on_uring_complete(&ctx);
    0
}

/// `mmap_lock_start_locking(struct mm_struct *mm, bool write)`, each time an
/// address space's lock is taken, while armed.
#[raw_tracepoint(tracepoint = "mmap_lock_start_locking")]
pub fn mm_lock(ctx: RawTracePointContext) -> i32 {
    read_paths::on_mm_lock(&ctx);
    0
}

/// BPF LSM `ptrace_access_check(struct task_struct *child, unsigned int mode)`.
/// Needs a kernel with CONFIG_BPF_LSM and `bpf` in the active LSM list (5.7+);
/// see `lsm`.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    lsm::verdict(&ctx, 2, || lsm::ptrace_access_check(ctx.arg(0), ctx.arg(1)))
}

/// BPF LSM `file_open(struct file *file)`: every open that gets this far.
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    lsm::verdict(&ctx, 1, || lsm::file_open(ctx.arg(0)))
}

/// BPF LSM `task_setrlimit(struct task_struct *p, unsigned int resource,
/// struct rlimit *new_rlim)`.
#[lsm(hook = "task_setrlimit")]
pub fn task_setrlimit(ctx: LsmContext) -> i32 {
    lsm::verdict(&ctx, 3, || lsm::task_setrlimit(ctx.arg(0)))
}

/// BPF LSM `task_fix_setuid(struct cred *new, const struct cred *old, int flags)`.
#[lsm(hook = "task_fix_setuid")]
pub fn task_fix_setuid(ctx: LsmContext) -> i32 {
    lsm::verdict(&ctx, 3, || lsm::task_fix_setuid(ctx.arg(0)))
}

/// BPF LSM `bprm_committed_creds(const struct linux_binprm *bprm)`, which
/// returns nothing.
#[lsm(hook = "bprm_committed_creds")]
pub fn bprm_committed_creds(_ctx: LsmContext) -> i32 {
    lsm::bprm_committed_creds();
    0
}

fn try_process_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if tid != tgid && THREADS.get_ptr(tid).is_some() {
        let _ = THREADS.remove(tid);
    }
    if !is_group_dead(ctx, tgid, tid)? {
        return Ok(0);
    }
    // SAFETY: the pointer came from a map lookup in this program run; entries are u32.
    if PROTECTED.get_ptr(tgid).map(|role| unsafe { *role }) == Some(PROTECTED_GUARDIAN) {
        announce_guardian_death();
    }
    if LEADERS.get_ptr(tgid).is_some() {
        emit(Event {
            kind: EventKind::LeaderExit as u32,
            pid: tgid,
            ktime_ns: now(),
            ..Event::EMPTY
        });
    }
    if WARDS.get_ptr(tgid).is_some() {
        let _ = WARDS.remove(tgid);
    }
    if FORCED_CORES.get_ptr(tgid).is_some() {
        let _ = FORCED_CORES.remove(tgid);
    }
    environ::forget(tgid);
    if HOLDERS.get_ptr(tgid).is_some() {
        let _ = HOLDERS.remove(tgid);
        emit_holder(Event {
            kind: EventKind::HolderExit as u32,
            pid: tgid,
            ktime_ns: now(),
            ..Event::EMPTY
        });
    }
    Ok(0)
}

/// Wakes the supervisor now, before the guardian's files are closed (closing
/// its tracepoint links alone takes the kernel hundreds of milliseconds).
fn announce_guardian_death() {
    // The record is the time; the supervisor only needs to be woken.
    if GUARDIAN_DEATH
        .output::<u64>(&now(), BPF_RB_FORCE_WAKEUP)
        .is_err()
    {
        aya_log_ebpf::warn!(&(), "cannot announce the guardian's death");
    }
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
    // Copied out of the maps at once: the verifier refuses arithmetic that
    // combines the two lookup pointers, which testing both for null invites.
    // SAFETY (both): pointers come from map lookups in this program run; entries are u64.
    let holder = HOLDERS.get_ptr(parent).map(|value| unsafe { *value });
    let ward = WARDS.get_ptr(parent).map(|value| unsafe { *value });
    if holder.is_none() && ward.is_none() && PROTECTED.get_ptr(parent).is_none() {
        return Ok(0);
    }
    // SAFETY: offsets come from this kernel's tracefs format for this tracepoint.
    let flags: u64 = unsafe { ctx.read_at(read_global(&NEWTASK_CLONE_FLAGS_OFFSET) as usize)? };
    // SAFETY: as above.
    let child: i32 = unsafe { ctx.read_at(read_global(&NEWTASK_PID_OFFSET) as usize)? };
    let child = child as u32;
    if flags & CLONE_THREAD != 0 {
        // A thread is part of its process; remember it so attacks on it count.
        if THREADS.insert(child, parent, 0).is_err() {
            aya_log_ebpf::warn!(
                ctx,
                "THREADS is full: killing {}, whose thread would be unprotected",
                parent
            );
            kill_current();
        }
        return Ok(0);
    }
    if let Some(ward) = ward {
        environ::inherit(parent, child);
        if WARDS.insert(child, ward, 0).is_err() {
            aya_log_ebpf::warn!(
                ctx,
                "WARDS is full: killing {}, whose child would be unprotected",
                parent
            );
            kill_current();
        }
    }
    let Some(value) = holder else {
        return Ok(0); // the guardian's children are not protected
    };
    if HOLDERS.insert(child, value, 0).is_err() {
        // Map full: the child would be untracked, so doom its parent instead.
        aya_log_ebpf::warn!(ctx, "HOLDERS is full: killing holder {}", parent);
        kill_current();
    }
    if holder_is_doomed(value) {
        kill_current();
    }
    emit_holder(Event {
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
    if sig != SIGHUP && !dumps_core(sig) {
        return Ok(0);
    }
    // SAFETY: as above.
    let target: i32 = unsafe { ctx.read_at(read_global(&SIGNAL_PID_OFFSET) as usize)? };
    let target = target as u32;
    if sig != SIGHUP {
        // The sender is the current task: one outside the ward's session
        // may not make it dump core (its memory may hold a value it got).
        // A kernel thread sends for the terminal (Ctrl-\ typed in it).
        let by_kernel = matches!(kmem::runner(kmem::current_task()), kmem::Runner::Kernel);
        if !by_kernel {
            wards::taint_cores(wards::thread_group_of(target));
        }
        return Ok(0);
    }
    // SAFETY: the pointer came from a map lookup in this program run; entries are u32.
    if LEADERS.get_ptr(target).map(|state| unsafe { *state }) == Some(LEADER_WATCHED) {
        let _ = LEADERS.insert(target, LEADER_HUNG_UP, 0);
        emit(Event {
            pid: target,
            other: ctx.tgid(),
            ..caller_event(EventKind::LeaderHangup)
        });
    }
    Ok(0)
}

/// True if `sig`'s default action dumps core.
fn dumps_core(sig: i32) -> bool {
    (1..64).contains(&sig) && CORE_SIGNALS & (1 << sig) != 0
}

/// A holder about to act on a signal whose default action dumps core is
/// SIGKILLed: the kernel then writes no core (it checks for a fatal signal
/// before it dumps), wherever `core_pattern` points, so no core of a holder,
/// and none of its secret, reaches a file or a piped helper. The holder was
/// dying anyway. So is any other ward when the signal came from outside its
/// session (`FORCED_CORES`): a shell that ran `x=$(get)` holds the value in
/// its memory. Its own crash, or `kill -SEGV` from inside its session, still
/// dumps core where the user lets it.
fn try_signal_deliver(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: offsets come from this kernel's tracefs format for this tracepoint.
    let sig: i32 = unsafe { ctx.read_at(read_global(&DELIVER_SIG_OFFSET) as usize)? };
    if !dumps_core(sig) {
        return Ok(0);
    }
    let (tgid, _) = current_ids();
    // The mark stays while a handler runs: bash catches SIGSEGV and raises it
    // again at itself, from inside the session. It counts while the process
    // is a ward: an unwatched session's processes crash as any other.
    let forced = FORCED_CORES.get_ptr(tgid).is_some() && WARDS.get_ptr(tgid).is_some();
    // SAFETY: as above.
    let handler: u64 = unsafe { ctx.read_at(read_global(&DELIVER_HANDLER_OFFSET) as usize)? };
    if handler == SIG_DFL && (forced || HOLDERS.get_ptr(tgid).is_some()) {
        kill_current();
        aya_log_ebpf::debug!(
            ctx,
            "SIGKILLed ward {} before it dumped core on signal {}",
            tgid,
            sig
        );
    }
    Ok(0)
}

/// An event of `kind` carrying the current task's uid, comm and the time.
pub(crate) fn caller_event(kind: EventKind) -> Event {
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

/// Writes a leader event, or counts it in `DROPPED` when the ring buffer is
/// full.
pub(crate) fn emit(event: Event) {
    if EVENTS.output::<Event>(&event, 0).is_err() {
        count_dropped();
    }
}

/// Writes a holder event, or counts it in `HOLDER_DROPPED` when its ring
/// buffer is full.
fn emit_holder(event: Event) {
    if HOLDER_EVENTS.output::<Event>(&event, 0).is_err() {
        aya_log_ebpf::warn!(&(), "a holder event was lost: the guardian reconciles");
        count(&HOLDER_DROPPED);
    }
}

/// Counts something the guardian should have seen and will not: it then
/// fails closed.
pub(crate) fn count_dropped() {
    aya_log_ebpf::warn!(&(), "an event was lost: the guardian will fail closed");
    count(&DROPPED);
}

/// Writes a tamper record, or counts it in `TAMPER_LOST` when its ring
/// buffer is full (the caller was killed all the same).
pub(crate) fn emit_tamper(event: Event) {
    if TAMPER_EVENTS.output::<Event>(&event, 0).is_err() {
        aya_log_ebpf::warn!(&(), "a tamper record was lost");
        count(&TAMPER_LOST);
    }
}

fn count(counter: &PerCpuArray<u64>) {
    if let Some(count) = counter.get_ptr_mut(0) {
        // SAFETY: per-CPU slot 0 exists (max_entries 1) and no one else writes it on this CPU now.
        unsafe { *count += 1 };
    }
}

pub(crate) fn kill_current() {
    // SAFETY: bpf_send_signal only signals the current task; any error is ignored
    // because the guardian also kills every holder it learns of.
    let _ = unsafe { bpf_send_signal(SIGKILL) };
}

pub(crate) fn current_ids() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

pub(crate) fn now() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

pub(crate) fn read_global<T: Copy>(global: &'static T) -> T {
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
