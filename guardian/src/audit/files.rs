//! The files of the log: their names (`audit.jsonl`, rotated ones as
//! `audit.jsonl.N`), and reading them, never through a link and never past
//! the zeroed room after the records.

#![forbid(unsafe_code)]

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// The records in `bytes` read from a file of the log: everything before
/// the first zero byte, where the room kept for the next records starts (a
/// record is JSON, which never holds a zero byte).
pub fn written(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// `path.N` for rotation number `n`.
pub(super) fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The rotated files of `path`, oldest first (`.N` down to `.1`). A link
/// among them is listed, so reading it fails in [`open_to_read`].
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    while fs::symlink_metadata(numbered(path, files.len() + 1)).is_ok() {
        files.push(numbered(path, files.len() + 1));
    }
    files.reverse();
    files
}

/// Opens a file of the log to read, never through a link: a link in the
/// log's place is reported, not followed.
pub fn open_to_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The whole of one file of the log, never read through a link.
pub fn read_whole(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut open_to_read(path)?, &mut bytes)?;
    Ok(bytes)
}

/// Every file of the log, oldest first, ending with `path` itself.
pub fn all_files(path: &Path) -> Vec<PathBuf> {
    let mut files = rotated_files(path);
    files.push(path.to_owned());
    files
}
