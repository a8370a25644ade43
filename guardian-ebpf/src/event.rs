//! The one record every program writes to the ring buffers, and what its
//! fields mean.

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
    /// An io_uring request reading a ward's memory: in an io-wq worker, or
    /// inline in io_uring_enter.
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
