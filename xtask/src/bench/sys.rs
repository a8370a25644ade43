//! The few system calls the benchmarks need: the monotonic clock (the one
//! `bpf_ktime_get_ns` and the audit log use) and pidfds to see processes die.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

/// CLOCK_MONOTONIC in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A pidfd for `pid`.
pub fn pidfd(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until every process behind `fds` has exited; returns when the last
/// one was seen gone (CLOCK_MONOTONIC ns), or None on timeout.
pub fn wait_all_exited(fds: &[OwnedFd], timeout: Duration) -> Option<u64> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = now_ns() + timeout.as_nanos() as u64;
    loop {
        polls.retain(|poll| poll.revents == 0);
        if polls.is_empty() {
            return Some(now_ns());
        }
        let left_ms = deadline.saturating_sub(now_ns()) / 1_000_000;
        if left_ms == 0 {
            return None;
        }
        // SAFETY: a valid array of pollfds and its length.
        unsafe {
            libc::poll(
                polls.as_mut_ptr(),
                polls.len() as u64,
                left_ms.min(1000) as i32,
            )
        };
    }
}

/// SIGKILLs `pid`.
pub fn kill(pid: i32) {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}
