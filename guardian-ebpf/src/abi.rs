//! The x86-64 system call ABIs as the raw syscall tracepoints see them: the
//! same number means different calls in the 64-bit, x32 and 32-bit (compat,
//! `int $0x80`) tables, so a call is named only with the task's compat flag.

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
    /// prlimit64(2): may set another process's limits.
    Limits,
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
            340 => Some(Call::Limits),
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
        302 | 0x4000_012e => Some(Call::Limits),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_numbers_are_read_per_table() {
        // ptrace in each table; 26 is msync in the 64-bit one.
        assert_eq!(classify(101, false), Some(Call::Ptrace));
        assert_eq!(classify(26, true), Some(Call::Ptrace));
        assert_eq!(classify(26, false), None);
        assert_eq!(classify(X32_BIT | 521, false), Some(Call::Ptrace));
        assert_eq!(classify(X32_BIT | 539, false), Some(Call::VmReadv));
        assert_eq!(classify(347, true), Some(Call::VmReadv));
        assert_eq!(classify(311, false), Some(Call::VmWritev));
        // openat is 257 in the 64-bit table, 295 in the 32-bit one.
        assert_eq!(classify(257, false), Some(Call::Open));
        assert_eq!(classify(295, true), Some(Call::Open));
        // open_by_handle_at reopens a file by its handle (a secret file too).
        assert_eq!(classify(304, false), Some(Call::Open));
        assert_eq!(classify(342, true), Some(Call::Open));
        assert_eq!(classify(295, false), None);
        assert_eq!(classify(X32_BIT | 257, false), Some(Call::Open));
        assert_eq!(classify(438, true), Some(Call::PidfdGetfd));
        assert!(may_matter(26) && may_matter(5) && !may_matter(0) && !may_matter(1));
        // The first argument is rdi natively and ebx through int $0x80.
        assert_eq!(arg_offset(0, false), 112);
        assert_eq!(arg_offset(0, true), 40);
    }

    #[test]
    fn calls_that_reach_into_another_address_space_are_read_per_table() {
        assert_eq!(reach(0, false), Some(Reach::Files(0, None))); // read
        assert_eq!(reach(3, true), Some(Reach::Files(0, None))); // read, 32-bit
        assert_eq!(reach(3, false), None); // close
        assert_eq!(reach(40, false), Some(Reach::Files(0, Some(1)))); // sendfile
        assert_eq!(reach(X32_BIT | 515, false), Some(Reach::Files(0, None))); // x32 readv
        assert_eq!(reach(310, false), Some(Reach::Process));
        assert_eq!(reach(347, true), Some(Reach::Process));
        assert_eq!(reach(257, false), None); // openat
        // io_uring_enter names no file: judged as io_uring (`read_paths`).
        assert_eq!(reach(426, false), None);
        assert_eq!(classify(298, false), Some(Call::PerfEventOpen));
        assert_eq!(classify(302, false), Some(Call::Limits)); // prlimit64
        assert_eq!(classify(340, true), Some(Call::Limits));
        assert_eq!(classify(336, true), Some(Call::PerfEventOpen));
    }
}
