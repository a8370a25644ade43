//! The production [`Os`]: pidfds and /proc, the cgroups, the eBPF link, tokio
//! tasks that report back on the state machine's channel, the audit file and
//! its syncer thread.

use std::{
    collections::HashSet,
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use guardian_ebpf::{FileKey, HolderState};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
};

use super::{
    Msg,
    os::{Containment, KernelMaps, Os, Process, SecretFile as SecretFileOps, Task},
};
use crate::{
    audit::{
        AuditLog, Entry,
        commit::{SyncJob, Syncer, Unsynced},
    },
    kernel::{KernelError, KernelLink},
    os::{
        cgroup::{Cgroups, GrantId},
        clock, fuse,
        hardening::{self, Protections},
        peer::Peer,
        pid_namespace,
        process::{self, Pid, Pidfd, Status, Uid},
        secret_file,
    },
    protocol::AuditFlushes,
};

/// How long after a tamper event a stopped process is looked for.
const CONTINUE_WINDOW: Duration = Duration::from_millis(200);
/// How often, within that window.
const CONTINUE_EVERY: Duration = Duration::from_millis(5);

/// The real operating system.
pub struct Host {
    audit: AuditLog,
    syncer: Syncer,
    to_core: mpsc::UnboundedSender<Msg>,
    protections: Protections,
}

impl Host {
    /// The host, reporting back on `to_core`, auditing to `audit` with
    /// `syncer` making its batches durable.
    pub fn new(
        audit: AuditLog,
        syncer: Syncer,
        to_core: mpsc::UnboundedSender<Msg>,
        protections: Protections,
    ) -> Self {
        Self {
            audit,
            syncer,
            to_core,
            protections,
        }
    }

    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static, msg: Msg) -> Task {
        let to_core = self.to_core.clone();
        let handle = tokio::spawn(async move {
            work.await;
            let _ = to_core.send(msg);
        })
        .abort_handle();
        Task::new(move || handle.abort())
    }
}

impl Os for Host {
    type Process = Pidfd;
    type Kernel = KernelLink;
    type Containment = Cgroups;
    type SecretFile = secret_file::SecretFile;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn now_ns(&self) -> u64 {
        clock::now_ns()
    }

    fn guardian(&self) -> Pid {
        Pid::current()
    }

    fn open(&self, pid: Pid) -> io::Result<Pidfd> {
        Pidfd::open(pid)
    }

    fn status(&self, pid: Pid) -> io::Result<Status> {
        Status::read(pid)
    }

    fn caller_status(&self, peer: &Peer) -> io::Result<Status> {
        match (&peer.status, &peer.process) {
            // Opened while the pidfd showed the caller alive, the file is
            // bound to it: once it is reaped (and only then can its pid be
            // reused), the read fails.
            (Some(file), _) => file.read(),
            (None, Some(process)) => {
                let status = Status::read(peer.pid)?;
                match process.is_alive() {
                    true => Ok(status),
                    false => Err(io::Error::from_raw_os_error(libc::ESRCH)),
                }
            }
            (None, None) => Status::read(peer.pid),
        }
    }

    fn open_caller(&self, peer: &Peer) -> io::Result<Pidfd> {
        match &peer.process {
            Some(process) => Ok(Pidfd::from_owned(
                process.as_fd().try_clone_to_owned()?,
                peer.pid,
            )),
            None => Pidfd::open(peer.pid),
        }
    }

    fn free_from_fuse(&self, pid: Pid) -> Vec<u32> {
        fuse::abort_traps(pid)
    }

    fn session_of(&self, pid: Pid) -> io::Result<Option<Pid>> {
        process::session_of(pid)
    }

    fn global_pid(&self, viewer: Pid, local: Pid) -> io::Result<Option<Pid>> {
        pid_namespace::global_pid(viewer, local)
    }

    fn descends_from(&self, pid: Pid, ancestor: Pid) -> bool {
        process::descends_from(pid, ancestor)
    }

    fn descendants_of(&self, roots: &HashSet<Pid>) -> Vec<Pid> {
        process::descendants_of(roots)
    }

    fn session_members(&self, leader: Pid, sid: Option<Pid>) -> Vec<Pid> {
        process::session_members(leader, sid)
    }

    fn is_exiting(&self, pid: Pid) -> bool {
        process::is_exiting(pid)
    }

    fn exe_of(&self, pid: Pid) -> String {
        process::exe_of(pid)
    }

    fn environ_holds(&self, pid: Pid, holds: &dyn Fn(&[u8]) -> bool) -> io::Result<bool> {
        process::environ_holds(pid, holds)
    }

    fn secret_file(&self, name: &str, bytes: &[u8]) -> io::Result<secret_file::SecretFile> {
        secret_file::SecretFile::new(name, bytes)
    }

    fn on_exit(&self, process: Arc<Pidfd>, msg: Msg) -> Task {
        let exited = async move {
            // SAFETY: the Pidfd owns its fd, which stays open and the same until
            // the last Arc (one of them inside this AsyncFd) is dropped.
            if let Ok(fd) = unsafe { AsyncFd::register_with_interest(process, Interest::READABLE) }
            {
                // Readable means exited; an error means the same for our purpose.
                let _ = fd.readable().await;
            }
        };
        self.spawn(exited, msg)
    }

    fn after(&self, delay: Duration, msg: Msg) -> Task {
        self.spawn(tokio::time::sleep(delay), msg)
    }

    fn continue_if_stopped(&self, process: Arc<Pidfd>) {
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + CONTINUE_WINDOW;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(CONTINUE_EVERY).await;
                if process::is_stopped(process.pid()) {
                    let _ = process.send(libc::SIGCONT);
                }
            }
        });
    }

    fn audit_write(&mut self, entry: &Entry) -> io::Result<()> {
        self.audit.write(entry)
    }

    fn audit_append(&mut self, entry: &Entry) -> io::Result<()> {
        self.audit.append(entry)
    }

    fn audit_commit(&mut self, batch: Vec<Unsynced>) -> Result<(), (Vec<Unsynced>, io::Error)> {
        let job = SyncJob {
            file: self.audit.current_file(),
            batch,
        };
        self.syncer
            .send(job)
            .map_err(|job| (job.batch, io::Error::other("the audit syncer stopped")))
    }

    fn audit_flushes(&self) -> AuditFlushes {
        self.syncer.flushes()
    }

    fn hardening(&self) -> Protections {
        hardening::current(&self.protections)
    }
}

impl Process for Pidfd {
    fn pid(&self) -> Pid {
        Pidfd::pid(self)
    }

    fn signal(&self, signal: i32) -> io::Result<()> {
        self.send(signal)
    }

    fn is_alive(&self) -> bool {
        Pidfd::is_alive(self)
    }
}

impl KernelMaps for KernelLink {
    fn arm(&mut self) -> Result<(), KernelError> {
        KernelLink::arm(self)
    }

    fn disarm(&mut self) {
        KernelLink::disarm(self);
    }

    fn is_armed(&self) -> bool {
        KernelLink::is_armed(self)
    }

    fn watch_leader(
        &mut self,
        leader: Pid,
        sid: Option<Pid>,
        owner: Uid,
    ) -> Result<(), KernelError> {
        KernelLink::watch_leader(self, leader, sid, owner)
    }

    fn unwatch_leader(&mut self, leader: Pid) {
        KernelLink::unwatch_leader(self, leader);
    }

    fn forget_wards_of(&mut self, leaders: &[Pid]) {
        KernelLink::forget_wards_of(self, leaders);
    }

    fn set_holder(
        &mut self,
        pid: Pid,
        grant: GrantId,
        state: HolderState,
    ) -> Result<(), KernelError> {
        KernelLink::set_holder(self, pid, grant, state)
    }

    fn remove_holder(&mut self, pid: Pid) {
        KernelLink::remove_holder(self, pid);
    }

    fn kill_at_exit_of(&mut self, leader: Pid, pid: Pid) {
        KernelLink::kill_at_exit_of(self, leader, pid);
    }

    fn own_grant(&mut self, grant: GrantId, owner: Uid) -> Result<(), KernelError> {
        KernelLink::own_grant(self, grant, owner)
    }

    fn forget_grant(&mut self, grant: GrantId) {
        KernelLink::forget_grant(self, grant);
    }

    fn guard_file(&mut self, file: FileKey, grant: GrantId) -> Result<(), KernelError> {
        KernelLink::guard_file(self, file, grant)
    }

    fn forget_file(&mut self, file: FileKey) {
        KernelLink::forget_file(self, file);
    }

    fn dropped_events(&self) -> u64 {
        KernelLink::dropped_events(self)
    }

    fn holder_events_lost(&self) -> u64 {
        KernelLink::holder_events_lost(self)
    }

    fn holders(&self) -> Vec<(Pid, GrantId)> {
        KernelLink::holders(self)
    }

    fn environ_stamp(&mut self, pid: Pid) -> Option<u64> {
        KernelLink::environ_stamp(self, pid)
    }

    fn ward_owner(&self, pid: Pid) -> Option<Uid> {
        KernelLink::ward_owner(self, pid)
    }

    fn current_stamp(&self, pid: Pid) -> Option<u64> {
        KernelLink::current_stamp(self, pid)
    }

    fn set_environ_clean(&mut self, stamp: u64, pid: Pid, clean: bool) -> Result<(), KernelError> {
        KernelLink::set_environ_clean(self, stamp, pid, clean)
    }

    fn is_environ_clean(&self, stamp: u64) -> bool {
        KernelLink::is_environ_clean(self, stamp)
    }

    fn tamper_suppressed(&self) -> Vec<(Uid, u64)> {
        KernelLink::tamper_suppressed(self)
    }

    fn tamper_lost(&self) -> u64 {
        KernelLink::tamper_lost(self)
    }

    fn lsm_error(&self) -> Option<&str> {
        KernelLink::lsm_error(self)
    }

    fn early_kill_error(&self) -> Option<&str> {
        KernelLink::early_kill_error(self)
    }

    fn read_paths(&self) -> crate::protocol::ReadPaths {
        KernelLink::read_paths(self)
    }
}

impl Containment for Cgroups {
    fn add(&self, grant: GrantId, pid: Pid) -> io::Result<PathBuf> {
        Cgroups::add(self, grant, pid)
    }

    fn restore(&self, grant: GrantId, origin: &Path) -> io::Result<Vec<Pid>> {
        Cgroups::restore(self, grant, origin)
    }

    fn kill(&self, grant: GrantId) -> io::Result<bool> {
        Cgroups::kill(self, grant)
    }

    fn populated(&self, grant: GrantId) -> bool {
        Cgroups::populated(self, grant)
    }

    fn members(&self, grant: GrantId) -> io::Result<HashSet<Pid>> {
        Cgroups::members(self, grant)
    }

    fn remove(&self, grant: GrantId) -> bool {
        Cgroups::remove(self, grant)
    }
}

impl SecretFileOps for secret_file::SecretFile {
    fn handle(&self) -> io::Result<OwnedFd> {
        secret_file::SecretFile::handle(self)
    }

    fn key(&self) -> FileKey {
        secret_file::SecretFile::key(self)
    }

    fn wipe(&mut self) {
        secret_file::SecretFile::wipe(self);
    }
}
