//! Freeing a holder that FUSE keeps from dying. A process that serves a FUSE
//! file system to itself, with one thread waiting on a request that another
//! thread read and never answers, sleeps uninterruptibly (D state) with
//! SIGKILL pending, and its own descriptor of /dev/fuse, which would answer,
//! lives as long as that thread. Aborting the FUSE connection (fusectl's
//! `abort`) ends the request, and the pending SIGKILL then finishes it.
//!
//! Only connections that have requests waiting and are mounted in the
//! holder's own mount namespace, but neither in the initial one nor in the
//! guardian's, are aborted: a mount that other processes share is not the
//! holder's to take away.

#![forbid(unsafe_code)]

use std::{collections::HashSet, fs, path::Path};

use super::process::Pid;

/// Where fusectl lists the FUSE connections.
const CONTROL: &str = "/sys/fs/fuse/connections";

/// Mounts fusectl where the kernel has FUSE and nothing mounted it yet;
/// `Err` says why holders trapped by FUSE cannot be freed here.
pub fn mount_control() -> Result<(), String> {
    if !Path::new(CONTROL).is_dir() {
        return Err("the kernel has no FUSE".to_owned());
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").map_err(|err| err.to_string())?;
    if mounts.lines().any(|line| line.contains(" - fusectl ")) {
        return Ok(());
    }
    use nix::mount::{MsFlags, mount};
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("fusectl"),
        CONTROL,
        Some("fusectl"),
        flags,
        None::<&str>,
    )
    .map_err(|errno| format!("cannot mount fusectl on {CONTROL}: {errno}"))
}

/// Aborts the FUSE connections that hold a thread of `pid` in D state with
/// SIGKILL pending; returns their numbers.
pub fn abort_traps(pid: Pid) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let own_namespace = fs::read_link("/proc/self/ns/mnt").ok();
    let mut shared = connections(Path::new("/proc/self/mountinfo"));
    shared.extend(connections(Path::new("/proc/1/mountinfo")));
    let mut aborted = Vec::new();
    for task in tasks.flatten().map(|entry| entry.path()) {
        if !stuck(&task) || fs::read_link(task.join("ns/mnt")).ok() == own_namespace {
            continue;
        }
        for connection in connections(&task.join("mountinfo")).difference(&shared) {
            let dir = Path::new(CONTROL).join(connection.to_string());
            let waiting = fs::read_to_string(dir.join("waiting"))
                .is_ok_and(|count| count.trim().parse::<u64>().is_ok_and(|n| n > 0));
            if waiting && fs::write(dir.join("abort"), "1").is_ok() && !aborted.contains(connection)
            {
                aborted.push(*connection);
            }
        }
    }
    aborted
}

/// True for a thread in uninterruptible sleep with SIGKILL pending.
fn stuck(task: &Path) -> bool {
    let Ok(status) = fs::read_to_string(task.join("status")) else {
        return false;
    };
    let field = |key: &str| super::process::status_field(&status, key).unwrap_or_default();
    let sigkill = |mask: &str| u64::from_str_radix(mask, 16).is_ok_and(|bits| bits & (1 << 8) != 0);
    field("State").starts_with('D') && (sigkill(field("SigPnd")) || sigkill(field("ShdPnd")))
}

/// The FUSE connections mounted in a mountinfo: a connection is numbered
/// by its superblock's device (major << 20 | minor).
fn connections(mountinfo: &Path) -> HashSet<u32> {
    let text = fs::read_to_string(mountinfo).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (mount, filesystem) = line.split_once(" - ")?;
            let kind = filesystem.split_whitespace().next()?;
            (kind == "fuse" || kind == "fuseblk" || kind.starts_with("fuse.")).then_some(())?;
            let (major, minor) = mount.split_whitespace().nth(2)?.split_once(':')?;
            Some((major.parse::<u32>().ok()? << 20) | minor.parse::<u32>().ok()?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_read_off_fuse_mounts_only() {
        let dir = std::env::temp_dir().join(format!("ns-fuse-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mountinfo = dir.join("mountinfo");
        fs::write(
            &mountinfo,
            "88 67 0:40 / /tmp/t rw,relatime - fuse.trap trap rw,user_id=0,group_id=0\n\
             89 67 0:41 / /mnt rw - fuseblk /dev/sdb1 rw\n\
             90 67 8:1 / / rw - ext4 /dev/sda1 rw\n\
             91 67 0:23 / /sys/fs/fuse/connections rw - fusectl fusectl rw\n",
        )
        .unwrap();
        let found = connections(&mountinfo);
        assert_eq!(found, HashSet::from([40, 41]));
        fs::remove_dir_all(&dir).unwrap();
    }
}
