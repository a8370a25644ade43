//! What the eBPF programs and the guardian agree on: map and program names, the
//! globals the guardian sets before loading, the values stored in maps, and the
//! one event record the programs write to the ring buffer.
//!
//! This library is `no_std`, has no dependencies and no `unsafe`, so the guardian
//! builds it for the host while the programs (`src/main.rs`) build it for BPF.

#![no_std]
#![forbid(unsafe_code)]

/// Names of the maps, exactly as the programs declare them.
pub mod maps {
    /// `HashMap<u32, u32>`: tgid of a bound session leader -> [`super::LEADER_WATCHED`].
    pub const LEADERS: &str = "LEADERS";
    /// `HashMap<u32, u64>`: tgid of a process holding a secret -> its grant and
    /// state, packed by [`super::holder_value`].
    pub const HOLDERS: &str = "HOLDERS";
    /// `HashMap<u32, u32>`: tgid of a process no one may ptrace or
    /// process_vm_read/write (the guardian and its supervisor) -> 1.
    pub const PROTECTED: &str = "PROTECTED";
    /// `HashMap<u32, u32>`: tid of a non-main thread of a holder or protected
    /// process -> its tgid, so an attack aimed at a thread is caught too.
    pub const THREADS: &str = "THREADS";
    /// `RingBuf` of [`super::Event`] records.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>` with one slot: events the programs could not write
    /// because the ring buffer was full. Any increase means the guardian missed
    /// something and must fail closed.
    pub const DROPPED: &str = "DROPPED";
}

/// Names of the programs with the tracepoint each attaches to, as `(program, category, event)`.
pub mod programs {
    /// Exit of every task: leader and holder deaths.
    pub const PROCESS_EXIT: (&str, &str, &str) = ("process_exit", "sched", "sched_process_exit");
    /// Creation of every task: holders' children become holders.
    pub const NEW_TASK: (&str, &str, &str) = ("new_task", "task", "task_newtask");
    /// Generation of every signal: SIGHUP aimed at a leader.
    pub const SIGNAL_GENERATE: (&str, &str, &str) =
        ("signal_generate", "signal", "signal_generate");
    /// Entry of ptrace(2): any request aimed at a protected process or holder.
    pub const PTRACE: (&str, &str, &str) = ("ptrace_enter", "syscalls", "sys_enter_ptrace");
    /// Entry of process_vm_readv(2).
    pub const VM_READV: (&str, &str, &str) =
        ("vm_readv_enter", "syscalls", "sys_enter_process_vm_readv");
    /// Entry of process_vm_writev(2).
    pub const VM_WRITEV: (&str, &str, &str) =
        ("vm_writev_enter", "syscalls", "sys_enter_process_vm_writev");
    /// The BPF LSM program on the `ptrace_access_check` hook (loaded where the
    /// kernel allows BPF LSM; the tracepoints above are the fallback).
    pub const PTRACE_ACCESS_CHECK: &str = "ptrace_access_check";
    /// The tracepoints that watch sessions and holders, attached for the
    /// guardian's whole life.
    pub const WATCH: [(&str, &str, &str); 3] = [PROCESS_EXIT, NEW_TASK, SIGNAL_GENERATE];
    /// The syscall-entry tracepoints that stop tampering. Attaching any
    /// syscall tracepoint sends every syscall on the machine through the
    /// kernel's slow path, so these are attached only while there is
    /// something to protect.
    pub const TAMPER: [(&str, &str, &str); 3] = [PTRACE, VM_READV, VM_WRITEV];
}

/// Globals (read-only data) the guardian fills in before load. Tracepoint field
/// offsets differ between kernels, so the guardian reads them from tracefs
/// rather than compiling them in.
pub mod globals {
    /// Offset of `group_dead` in `sched_process_exit`, or [`super::NO_FIELD`].
    pub const EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";
    /// Offset of `pid` in `task_newtask`.
    pub const NEWTASK_PID_OFFSET: &str = "NEWTASK_PID_OFFSET";
    /// Offset of `clone_flags` in `task_newtask`.
    pub const NEWTASK_CLONE_FLAGS_OFFSET: &str = "NEWTASK_CLONE_FLAGS_OFFSET";
    /// Offset of `sig` in `signal_generate`.
    pub const SIGNAL_SIG_OFFSET: &str = "SIGNAL_SIG_OFFSET";
    /// Offset of `pid` in `signal_generate`.
    pub const SIGNAL_PID_OFFSET: &str = "SIGNAL_PID_OFFSET";
    /// Offset of `request` in `sys_enter_ptrace`.
    pub const PTRACE_REQUEST_OFFSET: &str = "PTRACE_REQUEST_OFFSET";
    /// Offset of `pid` in `sys_enter_ptrace`.
    pub const PTRACE_PID_OFFSET: &str = "PTRACE_PID_OFFSET";
    /// Offset of `pid` in `sys_enter_process_vm_readv` (and `_writev`).
    pub const VM_PID_OFFSET: &str = "VM_PID_OFFSET";
    /// Offset of `tgid` in the kernel's `struct task_struct`, from BTF.
    pub const TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
}

/// PTRACE_TRACEME: its pid argument is ignored by the kernel, so it names no target.
pub const PTRACE_TRACEME: u64 = 0;

/// Marks a tracepoint field the running kernel does not have.
pub const NO_FIELD: u32 = u32::MAX;

/// Value stored in `LEADERS` for a watched leader.
pub const LEADER_WATCHED: u32 = 1;

/// Maximum entries in `LEADERS` and `HOLDERS`.
pub const MAX_TRACKED: u32 = 65_536;

/// Size of the ring buffer in bytes (a power of two, a multiple of the page size).
pub const RING_BYTES: u32 = 1 << 20;

/// What a holder is doing, stored in the low half of its `HOLDERS` value.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderState {
    /// Holds a live secret.
    Holding = 1,
    /// Its secret was wiped; it is being killed. A doomed holder that forks is
    /// SIGKILLed by the program itself, and its child is doomed too.
    Doomed = 2,
}

/// Packs a `HOLDERS` value: the grant (which `exec` the holder descends from)
/// in the high half, the [`HolderState`] in the low half. A child inherits the
/// whole value, so the guardian learns its grant from the event alone, even
/// when the parent has already exited.
pub const fn holder_value(grant: u32, state: HolderState) -> u64 {
    ((grant as u64) << 32) | state as u64
}

/// The grant half of a `HOLDERS` value.
pub const fn holder_grant(value: u64) -> u32 {
    (value >> 32) as u32
}

/// True if a `HOLDERS` value says the holder is doomed.
pub const fn holder_is_doomed(value: u64) -> bool {
    value as u32 == HolderState::Doomed as u32
}

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
}

impl TamperSyscall {
    /// The syscall's name for a code, or `"unknown"`.
    pub fn name(code: u32) -> &'static str {
        match code {
            1 => "ptrace",
            2 => "process_vm_readv",
            3 => "process_vm_writev",
            4 => "ptrace_access_check",
            _ => "unknown",
        }
    }
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
    /// A process called ptrace or process_vm_readv/writev on a holder or a
    /// protected process and was SIGKILLed at syscall entry. `pid` is the
    /// attacker, `other` the target's tgid, `uid`/`comm` the attacker's,
    /// `syscall` and `request` what it called.
    Tamper = 5,
}

impl EventKind {
    fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::LeaderExit,
            2 => Self::LeaderHangup,
            3 => Self::HolderFork,
            4 => Self::HolderExit,
            5 => Self::Tamper,
            _ => return None,
        })
    }
}

/// One ring-buffer record. Eight `u32`s (32 bytes), two `u64`s and a 16-byte
/// array make 64 bytes at 8-byte alignment: the layout has no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// The process the event is about (see [`EventKind`]).
    pub pid: u32,
    /// A second process, depending on the kind; 0 if none.
    pub other: u32,
    /// For `HolderFork`, the grant the child inherited; otherwise 0.
    pub grant: u32,
    /// For `Tamper` and `LeaderHangup`, the uid of the caller or sender.
    pub uid: u32,
    /// For `Tamper` and `LeaderHangup`, the gid of the caller or sender.
    pub gid: u32,
    /// Always 0; keeps `request` 8-byte aligned without implicit padding.
    pub reserved: u32,
    /// For `Tamper`, a [`TamperSyscall`] code.
    pub syscall: u32,
    /// For `Tamper` by ptrace, the request.
    pub request: u64,
    /// `bpf_ktime_get_ns()` when the event happened (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// For `Tamper` and `LeaderHangup`, the caller's command name (NUL-padded).
    pub comm: [u8; 16],
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
        reserved: 0,
        syscall: 0,
        request: 0,
        ktime_ns: 0,
        comm: [0; 16],
    };

    /// `comm` up to its first NUL, or `"?"` if it is not UTF-8.
    pub fn comm_str(&self) -> &str {
        let len = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        core::str::from_utf8(&self.comm[..len]).unwrap_or("?")
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
        Some(Self {
            kind: u32_at(0),
            pid: u32_at(4),
            other: u32_at(8),
            grant: u32_at(12),
            uid: u32_at(16),
            gid: u32_at(20),
            reserved: u32_at(24),
            syscall: u32_at(28),
            request: u64_at(32),
            ktime_ns: u64_at(40),
            comm,
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
        out[24..28].copy_from_slice(&event.reserved.to_ne_bytes());
        out[28..32].copy_from_slice(&event.syscall.to_ne_bytes());
        out[32..40].copy_from_slice(&event.request.to_ne_bytes());
        out[40..48].copy_from_slice(&event.ktime_ns.to_ne_bytes());
        out[48..64].copy_from_slice(&event.comm);
        out
    }

    #[test]
    fn event_round_trips_through_bytes() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"gdb\0");
        let event = Event {
            kind: EventKind::Tamper as u32,
            pid: 42,
            other: 7,
            grant: 5,
            uid: 1000,
            gid: 100,
            reserved: 0,
            syscall: 101,
            request: 0x4206,
            ktime_ns: 123_456_789_012,
            comm,
        };
        assert_eq!(Event::from_bytes(&to_bytes(&event)), Some(event));
        assert_eq!(event.kind(), Some(EventKind::Tamper));
        assert_eq!(event.comm_str(), "gdb");
    }

    #[test]
    fn holder_values_pack_grant_and_state() {
        let value = holder_value(0xdead_beef, HolderState::Doomed);
        assert_eq!(holder_grant(value), 0xdead_beef);
        assert!(holder_is_doomed(value));
        assert!(!holder_is_doomed(holder_value(7, HolderState::Holding)));
    }

    #[test]
    fn wrong_sized_records_and_unknown_kinds_are_refused() {
        assert_eq!(Event::SIZE, 64);
        assert_eq!(Event::from_bytes(&[0u8; 63]), None);
        let unknown = Event {
            kind: 99,
            ..Event::EMPTY
        };
        assert_eq!(unknown.kind(), None);
    }
}
