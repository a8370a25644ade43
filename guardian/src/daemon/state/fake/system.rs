//! The fake operating system: process handles, kernel maps, cgroups, and the
//! [`Os`] the state machine acts through, all reading and changing the world.

use std::{
    collections::HashSet,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use std::os::fd::OwnedFd;

use guardian_ebpf::{FileKey, HolderState};

use crate::{
    audit::{Entry, commit::Unsynced},
    daemon::state::{
        Msg,
        os::{KernelMaps, Os, Process, SecretFile, Task},
        sessions::GrantId,
    },
    kernel::KernelError,
    os::{
        hardening::Protections,
        peer::Peer,
        process::{Pid, Status, Uid},
    },
};

use super::{Effect, FakeCgroups, GUARDIAN, Proc, Shared, Timer, Watcher, pid};

/// A fake secret file: its inode number, and the world its wipes are
/// recorded in.
pub struct FakeSecretFile {
    key: FileKey,
    world: Shared,
}

impl SecretFile for FakeSecretFile {
    fn handle(&self) -> io::Result<OwnedFd> {
        Ok(std::fs::File::open("/dev/null")?.into())
    }

    fn key(&self) -> FileKey {
        self.key
    }

    fn wipe(&mut self) {
        let ino = self.key.ino;
        self.world.lock().effects.push(Effect::WipeFile { ino });
    }
}

/// A handle on a fake process.
pub struct FakeProcess {
    pub(super) pid: Pid,
    /// The [`Proc::birth`] it was opened for: a pid reused since names
    /// another process, which this handle does not see.
    pub(super) birth: u64,
    pub(super) world: Shared,
}

impl Process for FakeProcess {
    fn pid(&self) -> Pid {
        self.pid
    }

    fn signal(&self, signal: i32) -> io::Result<()> {
        self.world.lock().signal(self.pid.raw(), signal);
        Ok(())
    }

    fn is_alive(&self) -> bool {
        self.world
            .lock()
            .procs
            .get(&self.pid.raw())
            .is_some_and(|proc| proc.alive && proc.birth == self.birth)
    }
}

/// The fake kernel maps.
pub struct FakeKernel(pub(super) Shared);

fn map_full() -> KernelError {
    KernelError::Missing("room in the map")
}

impl KernelMaps for FakeKernel {
    fn arm(&mut self) -> Result<(), KernelError> {
        let mut world = self.0.lock();
        if world.kernel.fail_arm {
            return Err(KernelError::Missing("tamper program"));
        }
        world.kernel.armed = true;
        Ok(())
    }

    fn disarm(&mut self) {
        self.0.lock().kernel.armed = false;
    }

    fn is_armed(&self) -> bool {
        self.0.lock().kernel.armed
    }

    fn watch_leader(
        &mut self,
        leader: Pid,
        _sid: Option<Pid>,
        _owner: Uid,
    ) -> Result<(), KernelError> {
        self.0.lock().kernel.leaders.insert(leader.raw());
        Ok(())
    }

    fn unwatch_leader(&mut self, leader: Pid) {
        let kernel = &mut self.0.lock().kernel;
        kernel.leaders.remove(&leader.raw());
        kernel.early_kills.remove(&leader.raw());
    }

    fn forget_wards_of(&mut self, leaders: &[Pid]) {
        let mut world = self.0.lock();
        let forgotten = leaders.iter().map(|pid| pid.raw());
        world.kernel.wards_forgotten.extend(forgotten);
    }

    fn set_holder(
        &mut self,
        pid: Pid,
        grant: GrantId,
        state: HolderState,
    ) -> Result<(), KernelError> {
        let mut world = self.0.lock();
        if world.kernel.fail_set_holder {
            return Err(map_full());
        }
        world.kernel.holders.insert(pid.raw(), (grant, state));
        Ok(())
    }

    fn remove_holder(&mut self, pid: Pid) {
        self.0.lock().kernel.holders.remove(&pid.raw());
    }

    fn kill_at_exit_of(&mut self, leader: Pid, pid: Pid) {
        self.0
            .lock()
            .kernel
            .early_kills
            .insert(leader.raw(), pid.raw());
    }

    fn own_grant(&mut self, grant: GrantId, owner: Uid) -> Result<(), KernelError> {
        self.0.lock().kernel.grant_owners.insert(grant, owner);
        Ok(())
    }

    fn forget_grant(&mut self, grant: GrantId) {
        self.0.lock().kernel.grant_owners.remove(&grant);
    }

    fn guard_file(&mut self, file: FileKey, grant: GrantId) -> Result<(), KernelError> {
        self.0.lock().kernel.secret_files.insert(file.ino, grant);
        Ok(())
    }

    fn forget_file(&mut self, file: FileKey) {
        self.0.lock().kernel.secret_files.remove(&file.ino);
    }

    fn dropped_events(&self) -> u64 {
        self.0.lock().kernel.dropped
    }

    fn holder_events_lost(&self) -> u64 {
        self.0.lock().kernel.holder_dropped
    }

    fn environ_stamp(&mut self, pid: Pid) -> Option<u64> {
        let kernel = &mut self.0.lock().kernel;
        kernel.next_stamp += 1;
        let fresh = guardian_ebpf::GUARDIAN_STAMP | kernel.next_stamp;
        Some(*kernel.environ_stamps.entry(pid.raw()).or_insert(fresh))
    }

    fn ward_owner(&self, pid: Pid) -> Option<Uid> {
        self.0.lock().procs.get(&pid.raw()).map(|proc| proc.uid)
    }

    fn current_stamp(&self, pid: Pid) -> Option<u64> {
        self.0.lock().kernel.environ_stamps.get(&pid.raw()).copied()
    }

    fn set_environ_clean(&mut self, stamp: u64, _pid: Pid, clean: bool) -> Result<(), KernelError> {
        let kernel = &mut self.0.lock().kernel;
        match clean {
            true => kernel.clean_environs.insert(stamp),
            false => kernel.clean_environs.remove(&stamp),
        };
        Ok(())
    }

    fn is_environ_clean(&self, stamp: u64) -> bool {
        self.0.lock().kernel.clean_environs.contains(&stamp)
    }

    fn holders(&self) -> Vec<(Pid, GrantId)> {
        let world = self.0.lock();
        let holders = world.kernel.holders.iter();
        holders
            .filter_map(|(&pid, &(grant, _))| Some((Pid::new(pid)?, grant)))
            .collect()
    }

    fn tamper_suppressed(&self) -> Vec<(Uid, u64)> {
        let world = self.0.lock();
        world
            .kernel
            .suppressed
            .iter()
            .map(|(&uid, &n)| (uid, n))
            .collect()
    }

    fn tamper_lost(&self) -> u64 {
        self.0.lock().kernel.tamper_lost
    }

    fn lsm_error(&self) -> Option<&str> {
        Some("BPF LSM is not in this fake")
    }

    fn early_kill_error(&self) -> Option<&str> {
        None
    }

    fn read_paths(&self) -> crate::protocol::ReadPaths {
        crate::protocol::ReadPaths::default()
    }
}

/// The fake OS.
pub struct FakeOs {
    pub(super) world: Shared,
    pub(super) start: Instant,
}

impl FakeOs {
    fn proc(&self, pid: Pid) -> io::Result<Proc> {
        match self.world.lock().procs.get(&pid.raw()) {
            Some(proc) if proc.alive => Ok(proc.clone()),
            _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }
}

impl Os for FakeOs {
    type Process = FakeProcess;
    type Kernel = FakeKernel;
    type Containment = FakeCgroups;
    type SecretFile = FakeSecretFile;

    fn now(&self) -> Instant {
        self.start + self.world.lock().elapsed
    }

    fn now_ns(&self) -> u64 {
        self.world.lock().now_ns()
    }

    fn guardian(&self) -> Pid {
        pid(GUARDIAN)
    }

    fn open(&self, pid: Pid) -> io::Result<FakeProcess> {
        let birth = self.proc(pid)?.birth;
        if self.world.lock().out_of_descriptors {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        Ok(FakeProcess {
            pid,
            birth,
            world: self.world.clone(),
        })
    }

    fn status(&self, pid: Pid) -> io::Result<Status> {
        let proc = self.proc(pid)?;
        Ok(Status {
            uid: proc.uid,
            gid: proc.uid.0,
            ppid: proc.ppid,
            tracer: proc.tracer,
            tgid: proc.tgid,
            name: "fake".to_owned(),
            kernel_thread: proc.kernel_thread,
        })
    }

    fn caller_status(&self, peer: &Peer) -> io::Result<Status> {
        self.status(peer.pid)
    }

    fn open_caller(&self, peer: &Peer) -> io::Result<FakeProcess> {
        self.open(peer.pid)
    }

    fn free_from_fuse(&self, pid: Pid) -> Vec<u32> {
        let mut world = self.world.lock();
        let Some(connection) = world.fuse_traps.remove(&pid.raw()) else {
            return Vec::new();
        };
        if let Some(proc) = world.procs.get_mut(&pid.raw()) {
            proc.unkillable = false;
        }
        vec![connection]
    }

    fn session_of(&self, pid: Pid) -> io::Result<Option<Pid>> {
        Ok(Pid::new(self.proc(pid)?.sid))
    }

    fn global_pid(&self, viewer: Pid, local: Pid) -> io::Result<Option<Pid>> {
        let world = self.world.lock();
        let namespaced = world.local_pids.keys().any(|&(v, _)| v == viewer.raw());
        Ok(match namespaced {
            true => world
                .local_pids
                .get(&(viewer.raw(), local.raw()))
                .and_then(|&global| Pid::new(global)),
            false => Some(local),
        })
    }

    fn descends_from(&self, pid: Pid, ancestor: Pid) -> bool {
        let world = self.world.lock();
        let mut current = pid.raw();
        while current > 0 {
            if current == ancestor.raw() {
                return true;
            }
            current = world.procs.get(&current).map_or(0, |proc| proc.ppid);
        }
        false
    }

    fn descendants_of(&self, roots: &HashSet<Pid>) -> Vec<Pid> {
        let world = self.world.lock();
        let mut found = Vec::new();
        for (&pid, proc) in &world.procs {
            let pid = super::pid(pid);
            if proc.alive
                && !roots.contains(&pid)
                && roots.iter().any(|&root| {
                    let mut current = proc.ppid;
                    while current > 0 {
                        if current == root.raw() {
                            return true;
                        }
                        current = world.procs.get(&current).map_or(0, |p| p.ppid);
                    }
                    false
                })
            {
                found.push(pid);
            }
        }
        found
    }

    fn session_members(&self, leader: Pid, sid: Option<Pid>) -> Vec<Pid> {
        let in_session: Vec<Pid> = self
            .world
            .lock()
            .procs
            .iter()
            .filter(|(_, proc)| proc.alive && sid.is_some_and(|sid| proc.sid == sid.raw()))
            .map(|(&pid, _)| super::pid(pid))
            .collect();
        let mut members: HashSet<Pid> = self
            .descendants_of(&HashSet::from([leader]))
            .into_iter()
            .collect();
        members.insert(leader);
        members.extend(in_session);
        members.into_iter().collect()
    }

    fn is_exiting(&self, pid: Pid) -> bool {
        self.world
            .lock()
            .procs
            .get(&pid.raw())
            .is_some_and(|proc| proc.exiting)
    }

    fn exe_of(&self, pid: Pid) -> String {
        // As /proc/PID/exe: gone with the process.
        match self.proc(pid) {
            Ok(_) => "/usr/bin/fake".to_owned(),
            Err(_) => "?".to_owned(),
        }
    }

    fn environ_holds(&self, pid: Pid, holds: &dyn Fn(&[u8]) -> bool) -> io::Result<bool> {
        Ok(holds(&self.proc(pid)?.environ))
    }

    fn secret_file(&self, _name: &str, _bytes: &[u8]) -> io::Result<FakeSecretFile> {
        let mut world = self.world.lock();
        world.files_made += 1;
        let key = FileKey {
            ino: world.files_made,
            dev: 1,
            pad: 0,
        };
        Ok(FakeSecretFile {
            key,
            world: self.world.clone(),
        })
    }

    fn on_exit(&self, process: Arc<FakeProcess>, msg: Msg) -> Task {
        let mut world = self.world.lock();
        let id = world.task_id();
        world.watchers.push(Watcher {
            id,
            pid: process.pid.raw(),
            msg: Some(msg),
        });
        drop(world);
        self.world.task(id)
    }

    fn after(&self, delay: Duration, msg: Msg) -> Task {
        let mut world = self.world.lock();
        let id = world.task_id();
        let due = world.elapsed + delay;
        world.timers.push(Timer {
            id,
            due,
            msg: Some(msg),
        });
        drop(world);
        self.world.task(id)
    }

    fn continue_if_stopped(&self, process: Arc<FakeProcess>) {
        self.world.lock().effects.push(Effect::ContinueIfStopped {
            pid: process.pid.raw(),
        });
    }

    fn audit_write(&mut self, entry: &Entry) -> io::Result<()> {
        self.world.lock().audit(entry, false)
    }

    fn audit_append(&mut self, entry: &Entry) -> io::Result<()> {
        self.world.lock().audit(entry, true)
    }

    fn audit_commit(&mut self, batch: Vec<Unsynced>) -> Result<(), (Vec<Unsynced>, io::Error)> {
        let mut world = self.world.lock();
        if world.fail_commit {
            return Err((batch, io::Error::from_raw_os_error(libc::EIO)));
        }
        world.flushes.flushes += 1;
        world.flushes.answers += batch.len() as u64;
        drop(world);
        batch.into_iter().for_each(Unsynced::answer);
        Ok(())
    }

    fn audit_flushes(&self) -> crate::protocol::AuditFlushes {
        self.world.lock().flushes
    }

    fn hardening(&self) -> Protections {
        Protections::default()
    }
}
