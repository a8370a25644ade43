//! Who is on the other end of a connection, from SO_PEERCRED and /proc.

#![forbid(unsafe_code)]

use std::sync::Arc;

use serde::Serialize;

use super::process::{self, Pid, StatusFile, Uid};

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
}

impl Peer {
    /// Describes the process behind a socket's credentials; `None` when the
    /// kernel gave no pid (a peer in another pid namespace).
    pub fn from_cred(cred: &tokio::net::unix::UCred) -> Option<Self> {
        let pid = Pid::new(cred.pid()?)?;
        let status = StatusFile::open(pid).ok().map(Arc::new);
        let comm = status
            .as_ref()
            .and_then(|file| file.read().ok())
            .map(|status| status.name)
            .unwrap_or_default();
        Some(Self {
            pid,
            uid: Uid(cred.uid()),
            gid: cred.gid(),
            exe: process::exe_of(pid),
            comm,
            status,
        })
    }
}
