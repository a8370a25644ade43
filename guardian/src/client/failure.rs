//! Why a client command failed, told apart by its exit code (listed in
//! `cli::AFTER_LONG_HELP`), so that a script can act on it.

#![forbid(unsafe_code)]

use std::io;

use crate::protocol::ErrorKind;

/// A failure with an exit code of its own; anything else exits 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The guardian is not reachable: no socket, or nothing listening.
    Unreachable,
    /// The socket, or a root-only command, is not this user's to use.
    PermissionDenied,
    /// The guardian refused the request.
    Refused,
    /// The caller has no secret of that name.
    NoSuchSecret,
    /// `doctor`: the guardian is not running in its strongest mode.
    NotStrongest,
    /// `exec`: the command exists but cannot be run.
    NotExecutable,
    /// `exec`: the command is not found.
    NotFound,
}

impl Failure {
    /// The process's exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unreachable => 3,
            Self::PermissionDenied => 4,
            Self::Refused => 5,
            Self::NoSuchSecret => 6,
            Self::NotStrongest => 7,
            Self::NotExecutable => 126,
            Self::NotFound => 127,
        }
    }

    /// The failure a refusal of the guardian's stands for.
    pub fn of(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Refused => Self::Refused,
            ErrorKind::NoSuchSecret => Self::NoSuchSecret,
            ErrorKind::PermissionDenied => Self::PermissionDenied,
        }
    }

    /// The failure of a connect() to the socket, if it is one of ours.
    pub fn of_connect(err: &io::Error) -> Option<Self> {
        match err.raw_os_error()? {
            libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR => Some(Self::Unreachable),
            libc::EACCES | libc::EPERM => Some(Self::PermissionDenied),
            _ => None,
        }
    }

    /// This failure, said in `message`.
    pub fn because(self, message: impl Into<String>) -> Failed {
        Failed {
            failure: self,
            message: message.into(),
        }
    }
}

/// An error that carries its [`Failure`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// What kind of failure.
    pub failure: Failure,
    message: String,
}

/// The exit code for `err`: that of the first [`Failed`] in its chain, 1
/// for anything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Failed>())
        .map_or(1, |failed| failed.failure.code())
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn the_code_survives_context() {
        let err = Err::<(), _>(Failure::NoSuchSecret.because("no such secret: x"))
            .context("secret x")
            .unwrap_err();
        assert_eq!(exit_code(&err), 6);
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), 1);
    }

    #[test]
    fn codes_are_distinct_and_clear_of_usage_and_success() {
        let all = [
            Failure::Unreachable,
            Failure::PermissionDenied,
            Failure::Refused,
            Failure::NoSuchSecret,
            Failure::NotStrongest,
            Failure::NotExecutable,
            Failure::NotFound,
        ];
        let mut codes: Vec<u8> = all.iter().map(|f| f.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|&code| code > 2));
    }
}
