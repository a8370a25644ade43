//! The programs' two ring buffers, and the tamper counters beside them. The
//! events that decide the switch (leader exit and hangup, holder fork and
//! exit) have a ring of their own, read first, so no flood of tamper
//! attempts can delay or crowd them out; tamper records are limited per
//! caller uid in the kernel, and what the limit held back is counted.

use std::io;

use aya::{
    Pod,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use guardian_ebpf::{Event, RateWindow};
use tokio::io::{Interest, unix::AsyncFd};

use super::KernelLink;
use crate::os::process::Uid;

/// The two ring buffers, ready for async reads.
pub struct EventStream {
    switch: AsyncFd<RingBuf<MapData>>,
    tamper: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    pub(super) fn new(switch: RingBuf<MapData>, tamper: RingBuf<MapData>) -> io::Result<Self> {
        Ok(Self {
            switch: watch(switch)?,
            tamper: watch(tamper)?,
        })
    }

    /// Waits for events and takes every one waiting in one ring: the
    /// switch's ring whenever it has any, else the tamper ring.
    pub async fn next_batch(&mut self) -> io::Result<Vec<Event>> {
        tokio::select! {
            biased;
            ready = self.switch.readable_mut() => Ok(take_all(ready?)),
            ready = self.tamper.readable_mut() => Ok(take_all(ready?)),
        }
    }
}

fn watch(ring: RingBuf<MapData>) -> io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // for as long as the RingBuf (now owned by the AsyncFd) lives.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(Into::into)
}

/// Reads every event waiting, then waits for the next wake-up.
fn take_all(mut ready: tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>) -> Vec<Event> {
    let ring = ready.get_inner_mut();
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(event) = Event::from_bytes(&item) {
            events.push(event);
        }
    }
    ready.clear_ready();
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
        self.tamper
            .lost
            .get(&0, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }
}
