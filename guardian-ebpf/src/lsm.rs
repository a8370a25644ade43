//! The BPF LSM programs. Where the kernel has BPF LSM active they are the
//! primary mode: an outsider's access to a ward is refused with an error
//! instead of killed, so a tool like `ps` gets EACCES for one file and
//! carries on, and the attempt is recorded as denied. The system-call
//! programs are then not attached (any syscall tracepoint sends every
//! system call of the machine through the slow path); what no hook here sees, a read through a descriptor opened
//! before its target became a ward, keeps the address-space-lock program.

use aya_ebpf::programs::LsmContext;
use guardian_ebpf::TamperSyscall;

use crate::{current_ids, kmem, read_paths, wards};

const EPERM: i32 = 1;
const EACCES: i32 = 13;
/// `PTRACE_MODE_ATTACH`: the check of ptrace, `/proc/PID/mem`,
/// process_vm_readv/writev and pidfd_getfd.
const PTRACE_MODE_ATTACH: u32 = 0x02;
/// `PTRACE_MODE_REALCREDS`: a check a system call makes with the caller's
/// real credentials (perf_event_open, kcmp), never a procfs read.
const PTRACE_MODE_REALCREDS: u32 = 0x10;

/// The hook's answer: a refusal by an earlier LSM (argument `previous`)
/// stands; otherwise `decide`'s.
pub(crate) fn verdict(ctx: &LsmContext, previous: usize, decide: impl FnOnce() -> i32) -> i32 {
    let earlier: i32 = ctx.arg(previous);
    match earlier {
        0 => decide(),
        refused => refused,
    }
}

/// Refuses what reaches into a ward's memory or registers. The procfs reads
/// `ps`, `top` and `lsof` make (stat, fd, maps, environ) check in the read
/// mode with filesystem credentials and pass: `file_open` judges the one of
/// them that may leak a value, an environment. The kernel asks this hook
/// only once its own checks passed, so a caller it refuses is never seen.
pub(crate) fn ptrace_access_check(child: u64, mode: u32) -> i32 {
    if mode & (PTRACE_MODE_ATTACH | PTRACE_MODE_REALCREDS) == 0 {
        return 0;
    }
    match kmem::task_tgid(child) {
        Some(tgid) if wards::deny(tgid, TamperSyscall::PtraceAccessCheck, u64::from(mode)) => {
            -EPERM
        }
        _ => 0,
    }
}

/// Refuses the open of a ward's `mem`, of an `environ` that may hold a
/// value, and of a secret file by a process outside its grant, however the
/// file was reached (a path, `/proc/HOLDER/fd/N`, an io_uring open,
/// open_by_handle_at).
pub(crate) fn file_open(file: u64) -> i32 {
    let denied = match read_paths::ward_file(file) {
        Some((syscall, tgid)) => wards::deny(tgid, syscall, 0),
        None => read_paths::secret_file_grant(file).is_some_and(wards::deny_outside_grant),
    };
    match denied {
        true => -EACCES,
        false => 0,
    }
}

/// Lets a change of another process's limits through, marking a session
/// ward changed from outside its session (`wards::taint_cores`).
pub(crate) fn task_setrlimit(task: u64) -> i32 {
    if let Some(tgid) = kmem::task_tgid(task) {
        wards::taint_cores(tgid);
    }
    0
}

/// Refuses a holder a change of uid (`new` is the credentials it would
/// take): it would leave its grant.
pub(crate) fn task_fix_setuid(new: u64) -> i32 {
    let (tgid, _) = current_ids();
    match wards::holder_owner(tgid) {
        Some(owner) if !kmem::cred_uids_are(new, owner) => {
            wards::report(
                tgid,
                TamperSyscall::Credentials,
                0,
                guardian_ebpf::flags::DENIED,
            );
            -EPERM
        }
        _ => 0,
    }
}

/// A holder that exec'd a set-uid program is SIGKILLed before the program
/// runs as another user, and reported.
pub(crate) fn bprm_committed_creds() {
    wards::check_uids(kmem::current_task(), 0);
}
