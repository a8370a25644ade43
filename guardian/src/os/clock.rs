//! The kernel's monotonic clock, the one `bpf_ktime_get_ns` reads, so event
//! times from the kernel and the guardian's own times can be subtracted.

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only shorten a latency.
    now.unwrap_or(0)
}
