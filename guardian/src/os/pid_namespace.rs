//! Pids as a caller in a pid namespace gives them: `put --bind $$` inside a
//! container names a pid of the container's namespace, which the guardian
//! (in the initial one) must translate before it opens anything.
//!
//! /proc/PID/status lists a process's pid at each level from the initial
//! namespace down (`NSpid`). The process a caller at level L calls `n` is
//! the one whose pid at level L is `n` and whose namespace at level L is the
//! caller's: two sibling namespaces may both have a pid `n`, so that last
//! part is checked by walking up from the process's own namespace
//! (`NS_GET_PARENT`) and comparing it with the caller's.

use std::{
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
};

use super::process::{Pid, status_field};

/// `NS_GET_PARENT`, `_IO(0xb7, 0x2)`: a descriptor of the parent namespace.
const NS_GET_PARENT: libc::c_ulong = 0xb702;

/// The pid, in the guardian's namespace, of the process that `viewer` calls
/// `local`; `None` when `viewer` sees no such process.
pub fn global_pid(viewer: Pid, local: Pid) -> io::Result<Option<Pid>> {
    let level = ns_pids(viewer)?.len().saturating_sub(1);
    if level == 0 {
        return Ok(Some(local));
    }
    let viewers = identity(&File::open(format!("/proc/{viewer}/ns/pid"))?)?;
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Some(pid) = Pid::new(pid) else { continue };
        let Ok(ids) = ns_pids(pid) else { continue };
        if ids.get(level) != Some(&local.raw()) {
            continue;
        }
        if namespace_above(pid, ids.len() - 1 - level).is_ok_and(|ns| ns == viewers) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// `pid`'s pids from the initial namespace down to its own.
fn ns_pids(pid: Pid) -> io::Result<Vec<i32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let ids = status_field(&status, "NSpid")
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no NSpid (Linux 4.1+)"))?;
    Ok(ids
        .split_whitespace()
        .filter_map(|id| id.parse().ok())
        .collect())
}

/// The namespace `ups` levels above `pid`'s own, as (device, inode).
fn namespace_above(pid: Pid, ups: usize) -> io::Result<(u64, u64)> {
    let mut ns = OwnedFd::from(File::open(format!("/proc/{pid}/ns/pid"))?);
    for _ in 0..ups {
        // SAFETY: NS_GET_PARENT takes no argument and returns a new
        // descriptor, which we then own, or -1.
        let parent = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) };
        if parent < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `parent` is a fresh descriptor that nothing else owns.
        ns = unsafe { OwnedFd::from_raw_fd(parent) };
    }
    identity(&File::from(ns))
}

fn identity(ns: &File) -> io::Result<(u64, u64)> {
    let meta = ns.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_the_initial_namespace_a_pid_is_itself() {
        let me = Pid::current();
        assert_eq!(global_pid(me, me).unwrap(), Some(me));
    }
}
