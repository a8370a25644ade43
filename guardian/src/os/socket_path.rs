//! Who answers on the guardian's socket path. The client talks only to a
//! listener running as root, so no other user can take its secrets by
//! listening where it connects; the guardian takes its path only from a dead
//! socket of root's, and says who holds it otherwise.

#![forbid(unsafe_code)]

use std::{
    fmt,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    sys::{
        socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt},
        stat::SFlag,
    },
};

use super::trusted_path::{self, Leaf, PathError, TrustedDir};

/// The process listening on a socket, as the kernel recorded it at listen().
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Its pid; `None` when only the socket file's owner is known.
    pub pid: Option<i32>,
    /// Its uid, or the socket file's owner when the pid is unknown.
    pub uid: u32,
}

impl Listener {
    /// The listener at the other end of a connected `stream` (SO_PEERCRED).
    pub fn of(stream: &impl AsFd) -> nix::Result<Self> {
        let cred = socket::getsockopt(stream, sockopt::PeerCredentials)?;
        Ok(Self {
            pid: Some(cred.pid()),
            uid: cred.uid(),
        })
    }

    /// True for a listener running as root, as the guardian does.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "PID {pid} (uid {})", self.uid),
            None => write!(f, "uid {} (the socket's owner)", self.uid),
        }
    }
}

/// Why the guardian cannot take its socket path.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// A root process, presumably a guardian, listens there.
    #[error("a guardian is already listening on {path}")]
    Running {
        /// The socket path.
        path: PathBuf,
    },
    /// Another user's process listens there.
    #[error(
        "{path} is held by {holder}, not by root: someone else is listening where clients \
         connect; stop that process and remove the socket"
    )]
    Held {
        /// The socket path.
        path: PathBuf,
        /// Who listens.
        holder: Listener,
    },
    /// The path or a directory above it could be redirected, or a file
    /// there is not a socket of root's.
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Makes `path` free to bind: its directory is trusted (created 0755 when
/// missing), and what was there is gone, which is only ever a socket of
/// root's that no one listens on.
pub fn clear(path: &Path) -> Result<(), ClaimError> {
    let (dir, name) = TrustedDir::of_file(path, Leaf::Shared)?;
    let Some(stat) = dir.entry(&name)? else {
        return Ok(());
    };
    trusted_path::check_kind(&stat, path, SFlag::S_IFSOCK, "a socket")?;
    match listening(path, stat.st_uid)? {
        Some(holder) if holder.is_root() => Err(ClaimError::Running {
            path: path.to_owned(),
        }),
        Some(holder) => Err(ClaimError::Held {
            path: path.to_owned(),
            holder,
        }),
        None => {
            trusted_path::check_owner(&stat, path)?;
            Ok(dir.remove(&name)?)
        }
    }
}

/// Who listens on the socket at `path`, owned by `owner`; `None` if no one.
/// The connection does not wait: a listener whose queue is full is named by
/// the socket's owner.
fn listening(path: &Path, owner: u32) -> Result<Option<Listener>, PathError> {
    let fail = |errno: Errno| PathError::Io {
        path: path.to_owned(),
        source: errno.into(),
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let stream =
        socket::socket(AddressFamily::Unix, SockType::Stream, flags, None).map_err(fail)?;
    let by_owner = Listener {
        pid: None,
        uid: owner,
    };
    match socket::connect(stream.as_raw_fd(), &UnixAddr::new(path).map_err(fail)?) {
        Ok(()) => Ok(Some(Listener::of(&stream).unwrap_or(by_owner))),
        Err(Errno::EAGAIN) => Ok(Some(by_owner)),
        Err(Errno::ECONNREFUSED) => Ok(None),
        Err(errno) => Err(fail(errno)),
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::net::UnixListener};

    use super::*;

    #[test]
    fn only_a_dead_socket_is_cleared_and_a_live_one_is_named() {
        let dir = std::env::temp_dir().join(format!("ns-socket-path-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("s.sock");
        clear(&path).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        let ours = Listener {
            pid: Some(std::process::id() as i32),
            uid: nix::unistd::geteuid().as_raw(),
        };
        match clear(&path).unwrap_err() {
            ClaimError::Running { .. } => assert!(ours.is_root()),
            ClaimError::Held { holder, .. } => assert_eq!(holder, ours),
            err => panic!("{err}"),
        }
        drop(listener);
        clear(&path).unwrap();
        assert!(!path.exists());
        fs::write(&path, "").unwrap();
        let err = clear(&path).unwrap_err();
        assert!(err.to_string().ends_with("is not a socket"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
