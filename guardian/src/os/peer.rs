//! Who is on the other end of a connection, pinned to the very process that
//! connected: its pidfd comes from the socket itself (`SO_PEERPIDFD`), so a
//! peer that exits, is reaped and has its PID reused by another process is
//! never mistaken for that process.

#![forbid(unsafe_code)]

use std::{
    io,
    os::{fd::AsFd, unix::fs::MetadataExt, unix::net::UnixStream},
    sync::{Arc, OnceLock},
};

use nix::sys::socket::{getsockopt, sockopt};
use serde::Serialize;

use super::process::{self, Pid, Pidfd, StatusFile, Uid};

/// A connected client process.
#[derive(Clone, Debug, Serialize)]
pub struct Peer {
    /// Its pid at connect time.
    pub pid: Pid,
    /// Its effective uid at connect time.
    pub uid: Uid,
    /// Its effective gid at connect time.
    pub gid: u32,
    /// Its executable.
    pub exe: String,
    /// Its command name.
    pub comm: String,
    /// Its /proc status, open for per-request checks; `None` for a process
    /// described from a kernel event rather than a connection.
    #[serde(skip)]
    pub status: Option<Arc<StatusFile>>,
    /// The process that connected; `None` for a process described from a
    /// kernel event.
    #[serde(skip)]
    pub process: Option<Arc<Pidfd>>,
}

/// Why a connection has no usable peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The kernel gave no pid (a peer in another pid namespace).
    #[error("peer has no visible pid")]
    NoPid,
    /// The process that connected has exited.
    #[error("peer exited before it was served")]
    Gone,
    /// Its pidfd or /proc entry could not be had.
    #[error("cannot identify the peer: {0}")]
    Io(#[from] io::Error),
    /// It is dumpable now: it never made itself non-dumpable, or it has
    /// exec'd since it connected.
    #[error(
        "refused: the client (PID {0}) is dumpable, so another process of its uid could have \
         taken its connection; a client must call prctl(PR_SET_DUMPABLE, 0) before it \
         connects, and a connection ends when its process execs"
    )]
    Dumpable(Pid),
}

impl Peer {
    /// Describes the process connected to `socket`, whose credentials are
    /// `cred`. Everything read about it by pid is read while its pidfd shows
    /// it alive, so none of it describes a process that reused the pid.
    pub fn connected(socket: impl AsFd, cred: &tokio::net::unix::UCred) -> Result<Self, PeerError> {
        let pid = cred.pid().and_then(Pid::new).ok_or(PeerError::NoPid)?;
        let process = pin(&socket, pid)?;
        let status = StatusFile::open(pid).map_err(|_| PeerError::Gone)?;
        let comm = status.read().map(|status| status.name).unwrap_or_default();
        let exe = process::exe_of(pid);
        if !process.is_alive() {
            return Err(PeerError::Gone);
        }
        Ok(Self {
            pid,
            uid: Uid(cred.uid()),
            gid: cred.gid(),
            exe,
            comm,
            status: Some(Arc::new(status)),
            process: Some(Arc::new(process)),
        })
    }
}

impl Peer {
    /// Refuses a request unless the process that connected still runs the
    /// program that connected, non-dumpable. A client makes itself
    /// non-dumpable before it connects, so no other process of its uid can
    /// take its socket (pidfd_getfd and ptrace need a dumpable target, or
    /// CAP_SYS_PTRACE); exec makes a process dumpable again, so a request
    /// after the client became its command is refused, whoever sends it.
    /// Root's requests pass: root could take any socket anyway.
    pub fn check_in_control(&self) -> Result<(), PeerError> {
        let Some(process) = &self.process else {
            return Ok(());
        };
        if self.uid.0 == 0 {
            return Ok(());
        }
        // The kernel shows the /proc files of a non-dumpable process as
        // root's (the root of its user namespace), and refreshes that owner
        // at each path lookup, so this stat sees the current state.
        let owner = std::fs::metadata(format!("/proc/{}/status", self.pid))
            .map_err(|_| PeerError::Gone)?
            .uid();
        // Read while the pidfd shows the process alive: it was this process.
        if !process.is_alive() {
            return Err(PeerError::Gone);
        }
        match owner == self.uid.0 {
            true => Err(PeerError::Dumpable(self.pid)),
            false => Ok(()),
        }
    }
}

text_enum! {
    /// How a connection is pinned to the process that made it.
    pub enum Pinning {
        /// `SO_PEERPIDFD` (Linux 6.5+): the socket's own pidfd of the
        /// process that connected.
        PeerPidfd = "so_peerpidfd",
        /// Before 6.5: the peer's pid opened at accept, which cannot see a
        /// reuse of that pid between connect and accept.
        PidfdAtAccept = "pidfd_open at accept",
    }
}

static PINNING: OnceLock<Pinning> = OnceLock::new();

/// The pinning this kernel gives, found once on a socket pair of our own
/// (call it before seccomp, which allows no new socket).
pub fn pinning() -> Pinning {
    *PINNING.get_or_init(|| {
        let peer_pidfd =
            UnixStream::pair().is_ok_and(|(ours, _)| getsockopt(&ours, sockopt::PeerPidfd).is_ok());
        match peer_pidfd {
            true => Pinning::PeerPidfd,
            false => Pinning::PidfdAtAccept,
        }
    })
}

/// The pidfd of the process that connected to `socket`. Kernels before 6.5
/// lack `SO_PEERPIDFD`; there the pid is opened now, which pins it from
/// accept on but cannot see a reuse between connect and accept.
fn pin(socket: &impl AsFd, pid: Pid) -> Result<Pidfd, PeerError> {
    match getsockopt(socket, sockopt::PeerPidfd) {
        Ok(fd) => Ok(Pidfd::from_owned(fd, pid)),
        Err(nix::errno::Errno::ENOPROTOOPT | nix::errno::Errno::EINVAL) => {
            Pidfd::open(pid).map_err(|_| PeerError::Gone)
        }
        Err(nix::errno::Errno::ESRCH) => Err(PeerError::Gone),
        Err(errno) => Err(PeerError::Io(errno.into())),
    }
}
