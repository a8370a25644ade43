//! The programs' four ring buffers, and the counters beside them. The
//! events that decide the switch (leader exit and hangup, at most two per
//! leader) have a ring of their own, read first, so no flood can delay or
//! crowd them out. Holder fork and exit records come next: a user's own
//! holders can fill that ring, and the guardian then reads its holders off
//! the kernel map and the cgroups instead. Tamper records come next,
//! limited per caller uid in the kernel, with what the limit held back
//! counted. Wards' execs come last: one lost leaves an environment guarded.

use std::io;

use aya::{
    Pod,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use guardian_ebpf::{Event, RateWindow};
use tokio::io::{Interest, unix::AsyncFd};

use super::KernelLink;
use crate::os::process::Uid;

/// The four ring buffers, ready for async reads.
pub struct EventStream {
    leaders: AsyncFd<RingBuf<MapData>>,
    holders: AsyncFd<RingBuf<MapData>>,
    tamper: AsyncFd<RingBuf<MapData>>,
    environ: AsyncFd<RingBuf<MapData>>,
}

/// The four rings, as taken from the loaded object.
pub(super) struct Rings {
    pub(super) leaders: RingBuf<MapData>,
    pub(super) holders: RingBuf<MapData>,
    pub(super) tamper: RingBuf<MapData>,
    pub(super) environ: RingBuf<MapData>,
}

impl EventStream {
    pub(super) fn new(rings: Rings) -> io::Result<Self> {
        Ok(Self {
            leaders: watch(rings.leaders)?,
            holders: watch(rings.holders)?,
            tamper: watch(rings.tamper)?,
            environ: watch(rings.environ)?,
        })
    }

    /// Waits for events and takes every one waiting in one ring: leaders'
    /// whenever it has any, then holders' (unless `holders` is false), then
    /// tamper records, then wards' execs.
    ///
    /// While holders are being killed the caller leaves their ring unread
    /// and drains it on a timer instead ([`Self::switch_events_now`]): the
    /// kernel wakes a reader only for a record written when the reader had
    /// read everything, so a hundred dying holders then cost the guardian
    /// one wake-up per drain rather than one each, and the CPU goes to the
    /// dying.
    pub async fn next_batch(&mut self, holders: bool) -> io::Result<Vec<Event>> {
        tokio::select! {
            biased;
            ready = self.leaders.readable_mut() => Ok(take_all(ready?)),
            ready = self.holders.readable_mut(), if holders => Ok(take_all(ready?)),
            ready = self.tamper.readable_mut() => Ok(take_all(ready?)),
            ready = self.environ.readable_mut() => Ok(take_all(ready?)),
        }
    }

    /// Takes what waits in the leader and holder rings now, without
    /// waiting: called between requests, so a burst of them does not leave
    /// the rings unread.
    pub fn switch_events_now(&mut self) -> Vec<Event> {
        let mut events = drain(self.leaders.get_mut());
        events.extend(drain(self.holders.get_mut()));
        events
    }
}

fn watch(ring: RingBuf<MapData>) -> io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // for as long as the RingBuf (now owned by the AsyncFd) lives.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(Into::into)
}

/// Reads every event waiting, then waits for the next wake-up.
fn take_all(mut ready: tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>) -> Vec<Event> {
    let events = drain(ready.get_inner_mut());
    ready.clear_ready();
    events
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(event) = Event::from_bytes(&item) {
            events.push(event);
        }
    }
    events
}

/// [`RateWindow`] as aya reads it from a map.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct Window(RateWindow);

// SAFETY: RateWindow is repr(C), three u64s: no padding, any bits valid.
unsafe impl Pod for Window {}

/// The kernel's tamper counters.
pub(super) struct TamperCounters {
    pub(super) rate: PerCpuHashMap<MapData, u32, Window>,
    pub(super) lost: PerCpuArray<MapData, u64>,
}

impl KernelLink {
    /// Tamper attempts each uid made past the rate limit, since it was
    /// first seen (the sum over CPUs); uids with none are left out.
    pub fn tamper_suppressed(&self) -> Vec<(Uid, u64)> {
        self.tamper
            .rate
            .iter()
            .filter_map(Result::ok)
            .map(|(uid, windows)| (Uid(uid), windows.iter().map(|w| w.0.suppressed).sum()))
            .filter(|&(_, suppressed)| suppressed > 0)
            .collect()
    }

    /// Tamper records lost to a full tamper ring buffer.
    pub fn tamper_lost(&self) -> u64 {
        sum(&self.tamper.lost)
    }

    /// Holder records lost to a full holder ring buffer.
    pub fn holder_events_lost(&self) -> u64 {
        sum(&self.holder_dropped)
    }

    /// Leader records lost to a full leader ring buffer.
    pub fn dropped_events(&self) -> u64 {
        sum(&self.dropped)
    }
}

/// A per-CPU counter's total.
fn sum(counter: &PerCpuArray<MapData, u64>) -> u64 {
    counter
        .get(&0, 0)
        .map(|values| values.iter().sum())
        .unwrap_or(0)
}
