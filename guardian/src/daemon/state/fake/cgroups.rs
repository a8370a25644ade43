//! The fake cgroups: each grant's members, and where each process was before
//! a grant took it ([`Proc::cgroup`]).

use std::{
    collections::HashSet,
    io,
    path::{Path, PathBuf},
};

use crate::{
    daemon::state::{os::Containment, sessions::GrantId},
    os::{process::Pid, secret_mem},
};

use super::{Effect, Shared, pid};

/// The fake cgroups.
pub struct FakeCgroups(pub(super) Shared);

impl Containment for FakeCgroups {
    fn add(&self, grant: GrantId, pid: Pid) -> io::Result<PathBuf> {
        let mut world = self.0.lock();
        if let Some(newcomer) = world.reuse_at_contain.take() {
            world.reuse_pid(pid.raw(), newcomer);
        }
        let proc = world
            .procs
            .get_mut(&pid.raw())
            .filter(|proc| proc.alive)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        let origin = std::mem::replace(&mut proc.cgroup, grant_path(grant));
        world.cgroups.entry(grant).or_default().insert(pid.raw());
        Ok(origin)
    }

    fn restore(&self, grant: GrantId, origin: &Path) -> io::Result<Vec<Pid>> {
        let mut world = self.0.lock();
        let members = world.cgroups.get_mut(&grant).map(std::mem::take);
        let mut moved = Vec::new();
        for member in members.into_iter().flatten() {
            if let Some(proc) = world.procs.get_mut(&member) {
                proc.cgroup = origin.to_owned();
                moved.push(pid(member));
            }
        }
        Ok(moved)
    }

    fn kill(&self, grant: GrantId) -> io::Result<bool> {
        let mut world = self.0.lock();
        if world.fail_cgroup_kill {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let Some(members) = world.cgroups.get(&grant).cloned() else {
            return Ok(false);
        };
        let secrets_alive = secret_mem::live_on_this_thread();
        world.effects.push(Effect::CgroupKill {
            grant,
            secrets_alive,
        });
        for pid in members {
            if let Some(proc) = world.procs.get_mut(&pid)
                && proc.alive
            {
                proc.killed = true;
            }
        }
        Ok(true)
    }

    fn populated(&self, grant: GrantId) -> bool {
        let world = self.0.lock();
        world.cgroups.get(&grant).is_some_and(|members| {
            members
                .iter()
                .any(|pid| world.procs.get(pid).is_some_and(|p| p.alive))
        })
    }

    fn members(&self, grant: GrantId) -> io::Result<HashSet<Pid>> {
        let world = self.0.lock();
        Ok(world
            .cgroups
            .get(&grant)
            .into_iter()
            .flatten()
            .filter(|&pid| world.procs.get(pid).is_some_and(|p| p.alive))
            .filter_map(|&pid| Pid::new(pid))
            .collect())
    }

    fn remove(&self, grant: GrantId) -> bool {
        let mut world = self.0.lock();
        let empty = world.cgroups.get(&grant).is_none_or(|members| {
            members
                .iter()
                .all(|pid| !world.procs.get(pid).is_some_and(|p| p.alive))
        });
        if empty {
            world.cgroups.remove(&grant);
        }
        empty
    }
}

/// Where the fake puts a member of `grant`.
fn grant_path(grant: GrantId) -> PathBuf {
    PathBuf::from(format!("/ningen-shikkaku/grant-{grant}"))
}
