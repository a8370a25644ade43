//! One writer per log. Two guardians appending to one file would interleave
//! their sequence numbers and chains, and `verify` would then cry tamper at
//! records no one touched. So a guardian holds an exclusive lock on
//! `<log>.lock` (beside the log, so it outlives rotation) for as long as it
//! runs, with its pid written inside; a second one refuses to start and says
//! whose the log is.

#![forbid(unsafe_code)]

use std::{
    ffi::OsStr,
    fs::File,
    io::{self, Read, Seek, Write},
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use crate::os::trusted_path::TrustedDir;

/// The lock, held until dropped (or the process ends).
pub(super) struct WriterLock(#[expect(dead_code, reason = "held, never read")] Flock<File>);

impl WriterLock {
    /// Takes the lock of the log `name` in `dir` (whose path is `log`).
    pub(super) fn take(dir: &TrustedDir, name: &OsStr, log: &Path) -> io::Result<Self> {
        let mut lock_name = name.to_owned();
        lock_name.push(".lock");
        let file = dir.open_log(&lock_name).map_err(io::Error::other)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                lock.set_len(0)?;
                write!(lock, "{}", std::process::id())?;
                Ok(Self(lock))
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file
                    .rewind()
                    .and_then(|()| file.read_to_string(&mut holder));
                Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "{} is written by another guardian (pid {}); give each guardian an \
                         audit log of its own (--audit)",
                        log.display(),
                        match holder.trim() {
                            "" => "unknown",
                            pid => pid,
                        }
                    ),
                ))
            }
            Err((_, errno)) => Err(errno.into()),
        }
    }
}
