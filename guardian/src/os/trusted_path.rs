//! Paths no user but root can redirect: the socket's directory, the audit
//! log and its directory, the policy file. A directory is trusted when it is
//! a real directory (never a symbolic link), owned by root, and writable by no
//! one else, or root's and sticky like `/tmp`, where other users cannot move
//! or replace root's entries (or, above the last directory, writable by a
//! system group too, as Ubuntu's `/var/log` is, with a warning). Every directory from `/` down is opened relative
//! to the one above with `O_NOFOLLOW` and checked on its descriptor, and files
//! are opened relative to their checked directory the same way, so what is
//! checked is what is used.

#![forbid(unsafe_code)]

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Component, Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{self, AtFlags, OFlag},
    sys::stat::{self, FileStat, Mode, SFlag},
    unistd::{self, UnlinkatFlags},
};

/// Why a path is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// A symbolic link where a file or directory should be; it could lead anywhere.
    #[error("{path} is a symbolic link; refusing to follow it")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Not the kind of file expected there.
    #[error("{path} is not {expected}")]
    Kind {
        /// The file.
        path: PathBuf,
        /// What it should be ("a directory", "a regular file", "a socket").
        expected: &'static str,
    },
    /// Owned by a user other than root, who could change it.
    #[error("{path} is owned by uid {uid}, not root")]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Writable by users other than root.
    #[error("{path} is writable by users other than root (mode {mode:04o})")]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file with another name too, which may be any file of root's.
    #[error("{path} has more than one hard link; refusing a file that is also elsewhere")]
    Links {
        /// The file.
        path: PathBuf,
    },
    /// `..` in a path, whose meaning depends on where links lead.
    #[error("{path}: `..` is not allowed here")]
    ParentDir {
        /// The path.
        path: PathBuf,
    },
    /// The system refused.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// How the last directory of a path is created and held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// It and the directories above must exist (the policy file's).
    Existing,
    /// Created 0755 when missing (the socket's: every user may reach it).
    Shared,
    /// Created 0700 when missing; root's with any other mode is set to 0700
    /// (the audit log's).
    Private,
}

/// Flags for walking: a directory, never through a link.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Groups below this are the system's own (Debian and Ubuntu give users 1000
/// and up).
const FIRST_USER_GID: u32 = 1000;

/// A trusted directory, open.
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl TrustedDir {
    /// Opens `path`, checking every directory from `/` down; missing ones are
    /// created (0755, the last one as `leaf` says) unless `leaf` is
    /// [`Leaf::Existing`].
    pub fn open(path: &Path, leaf: Leaf) -> Result<Self, PathError> {
        let path = std::path::absolute(path).map_err(|source| io_error(path, source))?;
        let mut dir = Self {
            fd: fcntl::open("/", DIR_FLAGS, Mode::empty())
                .map_err(|errno| io_error(Path::new("/"), errno.into()))?,
            path: PathBuf::from("/"),
        };
        dir.check(None)?;
        let mut names = path.components().skip(1).peekable();
        while let Some(component) = names.next() {
            let Component::Normal(name) = component else {
                return Err(PathError::ParentDir { path });
            };
            let last = names.peek().is_none().then_some(leaf);
            dir = dir.child(name, last, leaf != Leaf::Existing)?;
        }
        Ok(dir)
    }

    /// The trusted directory of `file`, as [`TrustedDir::open`] holds it, and
    /// the file's name in it.
    pub fn of_file(file: &Path, leaf: Leaf) -> Result<(Self, OsString), PathError> {
        let file = std::path::absolute(file).map_err(|source| io_error(file, source))?;
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            return Err(PathError::Kind {
                path: file,
                expected: "a file's path",
            });
        };
        Ok((Self::open(dir, leaf)?, name.to_owned()))
    }

    /// The directory `name` in this one, created when missing and `create`,
    /// checked; `leaf` is `Some` for the last directory of the path.
    fn child(&self, name: &OsStr, leaf: Option<Leaf>, create: bool) -> Result<Self, PathError> {
        let fd = match fcntl::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Err(Errno::ENOENT) if create => self.make(name, leaf)?,
            opened => opened.map_err(|errno| self.refusal(name, errno, "a directory"))?,
        };
        let dir = Self {
            fd,
            path: self.path.join(name),
        };
        dir.check(leaf)?;
        Ok(dir)
    }

    /// Creates the directory `name` here with exactly its intended mode
    /// (mkdir's is cut by the umask, so it is set again on the descriptor).
    /// One that someone else made meanwhile is left as it is, for the check.
    fn make(&self, name: &OsStr, leaf: Option<Leaf>) -> Result<OwnedFd, PathError> {
        let mode = match leaf {
            Some(Leaf::Private) => Mode::S_IRWXU,
            _ => Mode::from_bits_truncate(0o755),
        };
        let made = match stat::mkdirat(&self.fd, name, mode) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(errno) => return Err(io_error(&self.path.join(name), errno.into())),
        };
        let fd = fcntl::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|errno| self.refusal(name, errno, "a directory"))?;
        if made {
            stat::fchmod(&fd, mode)
                .map_err(|errno| io_error(&self.path.join(name), errno.into()))?;
        }
        Ok(fd)
    }

    /// Holds this directory to its rule: the last of a private path is made
    /// 0700; every other is refused if anyone but root could change it.
    fn check(&self, leaf: Option<Leaf>) -> Result<(), PathError> {
        let stat = stat::fstat(&self.fd).map_err(|errno| io_error(&self.path, errno.into()))?;
        check_owner(&stat, &self.path)?;
        if leaf == Some(Leaf::Private) {
            return correct_mode(&self.fd, &stat, &self.path, 0o700);
        }
        let mode = stat.st_mode & 0o7777;
        let sticky = mode & Mode::S_ISVTX.bits() != 0;
        if mode & 0o022 == 0 || sticky {
            return Ok(());
        }
        // Ubuntu's /var/log is root:syslog 0775: a directory above ours that
        // only a system group may write to is the distribution's choice, used
        // with a warning rather than refused.
        if leaf.is_none() && mode & 0o022 == 0o020 && stat.st_gid < FIRST_USER_GID {
            tracing::warn!(
                "{} is writable by group {} (mode {mode:04o}); its members could move entries in it",
                self.path.display(),
                stat.st_gid
            );
            return Ok(());
        }
        Err(PathError::Writable {
            path: self.path.clone(),
            mode,
        })
    }

    /// What `name` here is, without following a link; `None` if nothing.
    pub fn entry(&self, name: &OsStr) -> Result<Option<FileStat>, PathError> {
        match stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(io_error(&self.path.join(name), errno.into())),
        }
    }

    /// Removes `name` (not a directory) from this directory.
    pub fn remove(&self, name: &OsStr) -> Result<(), PathError> {
        unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|errno| io_error(&self.path.join(name), errno.into()))
    }

    /// Opens (creating, 0600) the log file `name` here to read and write,
    /// without following a link. It must be root's regular file with no other
    /// name; any other mode is set to 0600.
    pub fn open_log(&self, name: &OsStr) -> Result<File, PathError> {
        let path = self.path.join(name);
        // No O_APPEND: records go in place, at offsets (with O_APPEND
        // Linux's pwrite appends whatever the offset).
        let flags = OFlag::O_RDWR | OFlag::O_CREAT;
        let fd = self.open_file(name, flags, Mode::S_IRUSR | Mode::S_IWUSR)?;
        let stat = stat::fstat(&fd).map_err(|errno| io_error(&path, errno.into()))?;
        check_kind(&stat, &path, SFlag::S_IFREG, "a regular file")?;
        check_owner(&stat, &path)?;
        if stat.st_nlink != 1 {
            return Err(PathError::Links { path });
        }
        correct_mode(&fd, &stat, &path, 0o600)?;
        Ok(File::from(fd))
    }

    /// Opens `name` here with `flags`, never through a link.
    fn open_file(&self, name: &OsStr, flags: OFlag, mode: Mode) -> Result<OwnedFd, PathError> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        fcntl::openat(&self.fd, name, flags, mode)
            .map_err(|errno| self.refusal(name, errno, "a regular file"))
    }

    /// Why `name` here could not be opened: a link, or not what was
    /// `expected`, when the kernel says so; else the kernel's error.
    fn refusal(&self, name: &OsStr, errno: Errno, expected: &'static str) -> PathError {
        let path = self.path.join(name);
        if !matches!(errno, Errno::ELOOP | Errno::ENOTDIR) {
            return io_error(&path, errno.into());
        }
        match self.entry(name) {
            Ok(Some(stat)) if kind_of(&stat) == SFlag::S_IFLNK => PathError::Symlink { path },
            Ok(_) => PathError::Kind { path, expected },
            Err(err) => err,
        }
    }
}

/// Opens `path` to read, once it and every directory above it are trusted
/// and it is writable by root only. A link is followed only to a file that
/// passes the same checks: the walk starts again from the link's target.
pub fn open_read_only(path: &Path) -> Result<File, PathError> {
    let resolved = std::fs::canonicalize(path).map_err(|source| io_error(path, source))?;
    let (dir, name) = TrustedDir::of_file(&resolved, Leaf::Existing)?;
    let fd = dir.open_file(&name, OFlag::O_RDONLY, Mode::empty())?;
    let stat = stat::fstat(&fd).map_err(|errno| io_error(&resolved, errno.into()))?;
    check_kind(&stat, &resolved, SFlag::S_IFREG, "a regular file")?;
    check_owner(&stat, &resolved)?;
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PathError::Writable {
            path: resolved,
            mode,
        });
    }
    Ok(File::from(fd))
}

/// Refuses a file that is not of `kind`, naming a link as such.
pub fn check_kind(
    stat: &FileStat,
    path: &Path,
    kind: SFlag,
    expected: &'static str,
) -> Result<(), PathError> {
    let path = path.to_owned();
    match kind_of(stat) {
        found if found == kind => Ok(()),
        found if found == SFlag::S_IFLNK => Err(PathError::Symlink { path }),
        _ => Err(PathError::Kind { path, expected }),
    }
}

fn kind_of(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// Refuses a file owned by anyone but root or this process's user (root in
/// the guardian; the unit tests run as anyone).
pub fn check_owner(stat: &FileStat, path: &Path) -> Result<(), PathError> {
    if stat.st_uid != 0 && stat.st_uid != unistd::geteuid().as_raw() {
        return Err(PathError::Owner {
            path: path.to_owned(),
            uid: stat.st_uid,
        });
    }
    Ok(())
}

/// Gives `fd` exactly `mode`, saying so when it had another.
fn correct_mode(fd: impl AsFd, stat: &FileStat, path: &Path, mode: u32) -> Result<(), PathError> {
    let found = stat.st_mode & 0o7777;
    if found != mode {
        stat::fchmod(fd, Mode::from_bits_truncate(mode))
            .map_err(|errno| io_error(path, errno.into()))?;
        tracing::warn!(
            "corrected the mode of {} from {found:04o} to {mode:04o}",
            path.display()
        );
    }
    Ok(())
}

fn io_error(path: &Path, source: io::Error) -> PathError {
    PathError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{PermissionsExt, symlink},
    };

    use super::*;

    /// A fresh directory of ours, 0755 whatever the umask.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ns-trusted-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o755);
        dir
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn missing_directories_are_made_with_their_modes() {
        let dir = scratch("make");
        TrustedDir::open(&dir.join("a/private"), Leaf::Private).unwrap();
        TrustedDir::open(&dir.join("b/shared"), Leaf::Shared).unwrap();
        let modes = ["a", "a/private", "b", "b/shared"].map(|name| mode_of(&dir.join(name)));
        assert_eq!(modes, [0o755, 0o700, 0o755, 0o755]);
        let err = TrustedDir::open(&dir.join("c/existing"), Leaf::Existing).unwrap_err();
        assert!(
            matches!(&err, PathError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_linked_directory_is_refused_and_nothing_is_made_behind_it() {
        let dir = scratch("link");
        fs::create_dir(dir.join("real")).unwrap();
        symlink(dir.join("real"), dir.join("link")).unwrap();
        let err = TrustedDir::open(&dir.join("link/sub"), Leaf::Shared).unwrap_err();
        assert!(
            matches!(&err, PathError::Symlink { path } if path == &dir.join("link")),
            "{err}"
        );
        assert!(!dir.join("real/sub").exists());
        let err = TrustedDir::open(&dir.join("x/../real"), Leaf::Shared).unwrap_err();
        assert!(matches!(err, PathError::ParentDir { .. }), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_is_refused_unless_sticky() {
        let dir = scratch("writable");
        fs::create_dir(dir.join("open")).unwrap();
        set_mode(&dir.join("open"), 0o777);
        let err = TrustedDir::open(&dir.join("open/sub"), Leaf::Shared).unwrap_err();
        assert!(
            matches!(err, PathError::Writable { mode: 0o777, .. }),
            "{err}"
        );
        assert!(TrustedDir::open(&dir.join("open"), Leaf::Shared).is_err());
        set_mode(&dir.join("open"), 0o1777);
        TrustedDir::open(&dir.join("open/sub"), Leaf::Shared).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_above_that_a_system_group_may_write_is_used_and_the_last_is_not() {
        let dir = scratch("group");
        fs::create_dir(dir.join("grp")).unwrap();
        set_mode(&dir.join("grp"), 0o775);
        // The group is ours: a system group when these run as root.
        let system = unistd::getegid().as_raw() < FIRST_USER_GID;
        let above = TrustedDir::open(&dir.join("grp/sub"), Leaf::Shared);
        assert_eq!(above.is_ok(), system, "{above:?}");
        let last = TrustedDir::open(&dir.join("grp"), Leaf::Shared).unwrap_err();
        assert!(
            matches!(last, PathError::Writable { mode: 0o775, .. }),
            "{last}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_private_directory_and_log_are_set_to_their_modes() {
        let dir = scratch("private");
        let audit = dir.join("audit");
        fs::create_dir(&audit).unwrap();
        set_mode(&audit, 0o777);
        fs::write(audit.join("log"), "").unwrap();
        set_mode(&audit.join("log"), 0o666);
        let private = TrustedDir::open(&audit, Leaf::Private).unwrap();
        private.open_log(OsStr::new("log")).unwrap();
        assert_eq!(
            (mode_of(&audit), mode_of(&audit.join("log"))),
            (0o700, 0o600)
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_is_never_opened_through_a_link_nor_with_another_name() {
        let dir = scratch("log");
        fs::write(dir.join("victim"), "no newline").unwrap();
        symlink(dir.join("victim"), dir.join("linked")).unwrap();
        fs::hard_link(dir.join("victim"), dir.join("hard")).unwrap();
        let trusted = TrustedDir::open(&dir, Leaf::Shared).unwrap();
        let err = trusted.open_log(OsStr::new("linked")).unwrap_err();
        assert!(matches!(err, PathError::Symlink { .. }), "{err}");
        let err = trusted.open_log(OsStr::new("hard")).unwrap_err();
        assert!(matches!(err, PathError::Links { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(dir.join("victim")).unwrap(),
            "no newline"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_policy_file_is_read_only_where_no_one_else_may_write() {
        let dir = scratch("policy");
        let file = dir.join("config.toml");
        fs::write(&file, "").unwrap();
        set_mode(&file, 0o644);
        symlink(&file, dir.join("linked.toml")).unwrap();
        open_read_only(&dir.join("linked.toml")).unwrap();
        set_mode(&file, 0o666);
        let err = open_read_only(&dir.join("linked.toml")).unwrap_err();
        assert!(
            matches!(&err, PathError::Writable { path, .. } if path == &file),
            "{err}"
        );
        set_mode(&file, 0o644);
        set_mode(&dir, 0o777);
        assert!(matches!(
            open_read_only(&file),
            Err(PathError::Writable { .. })
        ));
        set_mode(&dir, 0o755);
        fs::remove_dir_all(&dir).unwrap();
    }
}
