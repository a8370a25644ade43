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
    /// Every program, in attach order.
    pub const ALL: [(&str, &str, &str); 3] = [PROCESS_EXIT, NEW_TASK, SIGNAL_GENERATE];
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
}

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
}

impl EventKind {
    fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::LeaderExit,
            2 => Self::LeaderHangup,
            3 => Self::HolderFork,
            4 => Self::HolderExit,
            _ => return None,
        })
    }
}

/// One ring-buffer record. Every field is 4 or 8 bytes and the struct is 24
/// bytes, so the layout has no implicit padding.
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
    /// `bpf_ktime_get_ns()` when the event happened (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
}

impl Event {
    /// Size of the record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();

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
        let mut ktime = [0u8; 8];
        ktime.copy_from_slice(&bytes[16..24]);
        Some(Self {
            kind: u32_at(0),
            pid: u32_at(4),
            other: u32_at(8),
            grant: u32_at(12),
            ktime_ns: u64::from_ne_bytes(ktime),
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
        out[16..24].copy_from_slice(&event.ktime_ns.to_ne_bytes());
        out
    }

    #[test]
    fn event_round_trips_through_bytes() {
        let event = Event {
            kind: EventKind::HolderFork as u32,
            pid: 42,
            other: 7,
            grant: 5,
            ktime_ns: 123_456_789_012,
        };
        assert_eq!(Event::from_bytes(&to_bytes(&event)), Some(event));
        assert_eq!(event.kind(), Some(EventKind::HolderFork));
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
        assert_eq!(Event::from_bytes(&[0u8; 23]), None);
        let unknown = Event {
            kind: 99,
            pid: 1,
            other: 0,
            grant: 0,
            ktime_ns: 0,
        };
        assert_eq!(unknown.kind(), None);
    }
}
