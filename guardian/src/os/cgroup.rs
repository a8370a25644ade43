//! Holder containment with cgroup v2: each `exec` gets a cgroup of its own
//! under a root-owned directory per guardian. A holder cannot move itself out
//! (it cannot write to root's cgroup.procs), every process it forks is born
//! inside, and one write to `cgroup.kill` kills them all with no fork race.
//!
//! Layout: `<cgroup2 mount>/ningen-shikkaku/guardian-<pid>/grant-<id>`, the
//! instance directory mode 0700.
//!
//! A grant's `cgroup.kill` and `cgroup.events` are opened when the grant is
//! made, not when it is killed: a trigger needs no new descriptor, so a
//! guardian out of descriptors still kills, and still knows whether anything
//! in the cgroup survived.

#![forbid(unsafe_code)]

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File},
    io,
    os::unix::fs::{FileExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::os::{fuse, process::Pid};

/// Identifies one grant (the holders of one `exec`, which share a cgroup);
/// 32 bits because the kernel map packs it beside the holder's state.
pub type GrantId = u32;

const TOP: &str = "ningen-shikkaku";

/// This guardian's cgroup directory.
pub struct Cgroups {
    mount: PathBuf,
    instance: PathBuf,
    grants: Mutex<HashMap<GrantId, GrantFiles>>,
}

/// The files of one grant's cgroup, open for as long as it exists.
struct GrantFiles {
    kill: File,
    events: File,
}

/// The cgroup directory of the guardian whose pid is `guardian`.
pub fn instance_dir(guardian: Pid) -> Option<PathBuf> {
    Some(instance_under(&cgroup2_mount()?, guardian))
}

fn instance_under(mount: &Path, guardian: Pid) -> PathBuf {
    mount.join(TOP).join(format!("guardian-{guardian}"))
}

impl Cgroups {
    /// Creates the instance directory, after killing and removing those left by
    /// guardians that are no longer running.
    pub fn create() -> io::Result<Self> {
        let mount = cgroup2_mount()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 mount"))?;
        let instance = instance_under(&mount, Pid::current());
        let top = instance.parent().unwrap_or(&instance);
        fs::create_dir_all(top)?;
        // Root's alone, like each instance: its cgroup.stat would count
        // everyone's grants for anyone.
        fs::set_permissions(top, fs::Permissions::from_mode(0o700))?;
        remove_stale_instances(top);
        if instance.exists() {
            kill_tree(&instance)?;
            remove_tree(&instance);
        }
        fs::create_dir(&instance)?;
        // Root's alone: another user could otherwise list the grants and
        // read each one's cgroup.procs, the pids of everyone's holders.
        fs::set_permissions(&instance, fs::Permissions::from_mode(0o700))?;
        if !instance.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&instance);
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel lacks cgroup.kill (5.14+)",
            ));
        }
        Ok(Self {
            mount,
            instance,
            grants: Mutex::default(),
        })
    }

    /// The instance directory (the supervisor kills it whole).
    pub fn instance(&self) -> &Path {
        &self.instance
    }

    /// Moves `pid` into the cgroup of `grant`, creating it (and opening its
    /// files) if needed. Returns the cgroup `pid` was in, for [`Self::restore`].
    pub fn add(&self, grant: GrantId, pid: Pid) -> io::Result<PathBuf> {
        let dir = self.grant_dir(grant);
        if let std::collections::hash_map::Entry::Vacant(entry) = self.grants().entry(grant) {
            if !dir.exists() {
                fs::create_dir(&dir)?;
            }
            entry.insert(GrantFiles {
                kill: fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.kill"))?,
                events: File::open(dir.join("cgroup.events"))?,
            });
        }
        let origin = cgroup_of(pid)?;
        fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        Ok(origin)
    }

    /// Moves every process in the cgroup of `grant` to `origin`, or to the
    /// root cgroup if `origin` takes none: undoes an [`Self::add`] whose pid
    /// number had come to name another process. Returns those moved.
    pub fn restore(&self, grant: GrantId, origin: &Path) -> io::Result<Vec<Pid>> {
        let relative = origin.strip_prefix("/").unwrap_or(origin);
        let mut moved = Vec::new();
        // Whatever a process forks while it is moved is born inside: look
        // again until none is left, a few times at most.
        for _ in 0..3 {
            let members = self.members(grant)?;
            if members.is_empty() {
                break;
            }
            for pid in members {
                let pid_text = pid.to_string();
                fs::write(self.mount.join(relative).join("cgroup.procs"), &pid_text)
                    .or_else(|_| fs::write(self.mount.join("cgroup.procs"), &pid_text))?;
                moved.push(pid);
            }
        }
        Ok(moved)
    }

    /// Kills every process in the cgroup of `grant`, and any it is forking
    /// meanwhile. False when the grant has no cgroup (never made, or removed).
    pub fn kill(&self, grant: GrantId) -> io::Result<bool> {
        match self.grants().get(&grant) {
            Some(files) => files.kill.write_at(b"1", 0).map(|_| true),
            None => Ok(false),
        }
    }

    /// True while a process (not a zombie) is left in the cgroup of `grant`.
    /// A cgroup that cannot be read counts as populated: never report a tree
    /// dead that was not seen dead.
    pub fn populated(&self, grant: GrantId) -> bool {
        let grants = self.grants();
        let Some(files) = grants.get(&grant) else {
            return false;
        };
        let mut buf = [0u8; 256];
        match files.events.read_at(&mut buf, 0) {
            Ok(len) => String::from_utf8_lossy(&buf[..len])
                .lines()
                .any(|line| line == "populated 1"),
            Err(_) => true,
        }
    }

    /// The processes in the cgroup of `grant` now (none if it has no cgroup).
    pub fn members(&self, grant: GrantId) -> io::Result<HashSet<Pid>> {
        if !self.grants().contains_key(&grant) {
            return Ok(HashSet::new());
        }
        let procs = fs::read_to_string(self.grant_dir(grant).join("cgroup.procs"))?;
        Ok(procs
            .lines()
            .filter_map(|line| Pid::new(line.trim().parse().ok()?))
            .collect())
    }

    /// Removes the cgroup of `grant` if it is empty, and closes its files;
    /// false if it is still there (whoever asked tries again later). A
    /// cgroup never made counts as removed.
    pub fn remove(&self, grant: GrantId) -> bool {
        let mut grants = self.grants();
        if !grants.contains_key(&grant) {
            return true;
        }
        let removed = fs::remove_dir(self.grant_dir(grant)).is_ok();
        if removed {
            grants.remove(&grant);
        }
        removed
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<GrantId, GrantFiles>> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn grant_dir(&self, grant: GrantId) -> PathBuf {
        self.instance.join(format!("grant-{grant}"))
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.grants().clear();
        remove_tree(&self.instance);
    }
}

/// Kills every process in `dir` and its descendants (one write).
pub fn kill_tree(dir: &Path) -> io::Result<()> {
    fs::write(dir.join("cgroup.kill"), "1")
}

/// After a kill of the tree `dir`: if a process is still in it after a
/// moment, aborts the FUSE connections that keep any of them from dying
/// (see [`fuse`]), and kills the tree again. Returns what was aborted.
pub fn free_stuck(dir: &Path) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_millis(200);
    while is_populated(dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !is_populated(dir) {
        return Vec::new();
    }
    let aborted: Vec<u32> = procs_in_tree(dir)
        .into_iter()
        .flat_map(fuse::abort_traps)
        .collect();
    let _ = kill_tree(dir);
    aborted
}

/// Every process in `dir` and the cgroups under it.
fn procs_in_tree(dir: &Path) -> Vec<Pid> {
    let mut dirs = vec![dir.to_owned()];
    if let Ok(entries) = fs::read_dir(dir) {
        dirs.extend(
            entries
                .flatten()
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                .map(|entry| entry.path()),
        );
    }
    dirs.iter()
        .filter_map(|dir| fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|line| Pid::new(line.trim().parse().ok()?))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits briefly for `dir` to empty, then removes its child cgroups and itself.
pub fn remove_tree(dir: &Path) {
    let deadline = Instant::now() + Duration::from_millis(500);
    while is_populated(dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

fn is_populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|line| line == "populated 1"))
        .unwrap_or(false)
}

/// Instances whose guardian pid is gone: a guardian that died with its
/// supervisor. Their holders are killed now (fail closed).
fn remove_stale_instances(top: &Path) {
    let Ok(entries) = fs::read_dir(top) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("guardian-")) else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        tracing::warn!(instance = %entry.path().display(), "killing holders left by a dead guardian");
        let _ = kill_tree(&entry.path());
        let aborted = free_stuck(&entry.path());
        if !aborted.is_empty() {
            tracing::warn!(
                ?aborted,
                "aborted FUSE connections that kept those holders alive"
            );
        }
        remove_tree(&entry.path());
    }
}

/// The cgroup v2 path of `pid` (the `0::` line of /proc/PID/cgroup), from
/// the root of the mount.
fn cgroup_of(pid: Pid) -> io::Result<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 line"))
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` or, in a hybrid layout,
/// `/sys/fs/cgroup/unified`).
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (mount, fs_part) = line.split_once(" - ")?;
        let mount_point = mount.split_whitespace().nth(4)?;
        (fs_part.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real cgroups: a process moved into a grant and restored is back
    /// in the cgroup it came from, and out of the grant.
    #[test]
    fn restore_puts_a_moved_process_back_where_it_was() {
        if !rustix::process::geteuid().is_root() || cgroup2_mount().is_none() {
            eprintln!("skipped: needs root and cgroup v2");
            return;
        }
        let cgroups = Cgroups::create().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::new(child.id() as i32).unwrap();
        let before = cgroup_of(pid).unwrap();

        let origin = cgroups.add(7, pid).unwrap();
        assert_eq!(origin, before);
        assert!(cgroups.members(7).unwrap().contains(&pid));
        assert_ne!(cgroup_of(pid).unwrap(), before);

        assert_eq!(cgroups.restore(7, &origin).unwrap(), vec![pid]);
        assert_eq!(cgroup_of(pid).unwrap(), before);
        assert!(cgroups.members(7).unwrap().is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(cgroups.remove(7));
    }

    #[test]
    fn the_cgroup2_mount_is_found_when_there_is_one() {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert_eq!(cgroup2_mount().is_some(), mounts.contains(" - cgroup2 "));
    }
}
