//! The kernel's own kill: when a watched leader's last thread exits, the
//! newest holder bound to it is sent SIGKILL from the exit itself, before the
//! guardian has even woken. The guardian's wipe and `cgroup.kill` follow as
//! always and stay the guarantee; this only takes the guardian's wake-up
//! out of the one-holder case.
//!
//! Killing another process needs kfuncs (`bpf_task_from_pid`,
//! `bpf_send_signal_task`, `bpf_task_release`: Linux 6.13) from a BTF
//! tracepoint. Rust eBPF cannot name a kfunc (aya 0.14 has no kfunc
//! relocations), so each call is written here as the raw instruction with a
//! placeholder in place of the function's BTF id, and the guardian writes the
//! running kernel's ids over the placeholders before loading
//! (`guardian_ebpf::KFUNCS`). The verifier then checks each call against the
//! kernel's own prototype, so a wrong id is a refused load, never a wrong
//! call; where the load is refused the guardian runs without this program.
//!
//! Only one holder per exit: from a tracepoint the kernel queues the signal
//! on a per-CPU slot that holds one at a time.

use core::arch::asm;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use guardian_ebpf::{KFUNC_SEND_SIGNAL_TASK, KFUNC_TASK_FROM_PID, KFUNC_TASK_RELEASE, kfunc_call};

use crate::{EARLY_KILL, HOLDERS, LEADERS, SIGKILL, current_ids};

/// `PIDTYPE_TGID`: signal the whole process.
const PIDTYPE_TGID: u64 = 1;

/// `tp_btf/sched_process_exit(struct task_struct *p, bool group_dead)`.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn leader_exit_kill(ctx: BtfTracePointContext) -> i32 {
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return 0;
    }
    let (tgid, _) = current_ids();
    if LEADERS.get_ptr(tgid).is_none() {
        return 0;
    }
    // SAFETY: the pointer came from a map lookup in this program run; entries are u32.
    let Some(holder) = EARLY_KILL.get_ptr(tgid).map(|pid| unsafe { *pid }) else {
        return 0;
    };
    let _ = EARLY_KILL.remove(tgid);
    // Only a live holder: its HOLDERS entry goes at its exit, before its pid
    // can be reused.
    if HOLDERS.get_ptr(holder).is_some() {
        let sent = kill(holder);
        aya_log_ebpf::debug!(
            &ctx,
            "leader {} exited: SIGKILL to holder {}: {}",
            tgid,
            holder,
            sent
        );
    }
    0
}

/// SIGKILL to process `pid`; the kfunc's result (0, or a negative errno).
fn kill(pid: u32) -> i64 {
    let task = task_from_pid(pid);
    if task == 0 {
        return -3; // ESRCH
    }
    let sent = send_signal_task(task, SIGKILL);
    task_release(task);
    sent
}

/// `bpf_task_from_pid(pid)`: a counted reference to the task, or 0.
#[inline(always)]
fn task_from_pid(pid: u32) -> u64 {
    let task: u64;
    // SAFETY: a kfunc call by the BPF calling convention (argument in r1,
    // result in r0, r1-r5 clobbered); the verifier checks it against the
    // kernel's prototype and tracks the reference it returns.
    unsafe {
        asm!(
            ".quad {call}",
            call = const kfunc_call(KFUNC_TASK_FROM_PID),
            inlateout("r1") u64::from(pid) => _,
            lateout("r0") task,
            lateout("r2") _, lateout("r3") _, lateout("r4") _, lateout("r5") _,
            options(nostack),
        );
    }
    task
}

/// `bpf_send_signal_task(task, sig, PIDTYPE_TGID, 0)`.
#[inline(always)]
fn send_signal_task(task: u64, sig: u32) -> i64 {
    let sent: i64;
    // SAFETY: as in `task_from_pid`; `task` is the reference it returned.
    unsafe {
        asm!(
            ".quad {call}",
            call = const kfunc_call(KFUNC_SEND_SIGNAL_TASK),
            inlateout("r1") task => _,
            inlateout("r2") u64::from(sig) => _,
            inlateout("r3") PIDTYPE_TGID => _,
            inlateout("r4") 0u64 => _,
            lateout("r0") sent,
            lateout("r5") _,
            options(nostack),
        );
    }
    sent
}

/// `bpf_task_release(task)`: gives back the reference.
#[inline(always)]
fn task_release(task: u64) {
    // SAFETY: as in `task_from_pid`; `task` is released exactly once.
    unsafe {
        asm!(
            ".quad {call}",
            call = const kfunc_call(KFUNC_TASK_RELEASE),
            inlateout("r1") task => _,
            lateout("r0") _, lateout("r2") _, lateout("r3") _, lateout("r4") _, lateout("r5") _,
            options(nostack),
        );
    }
}
