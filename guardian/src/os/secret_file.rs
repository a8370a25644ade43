//! Secrets delivered as files (`exec --file VAR=NAME`): one sealed memfd per
//! secret and grant. Its bytes never touch a disk-backed file system (a
//! memfd is shmem), are never swapped (the guardian keeps a locked mapping
//! of them for as long as the grant lives), and cannot be changed by anyone
//! else: the file is sealed against writes, shrinking and growing. The
//! guardian's own mapping, made before the seal, is the one way left to
//! write to it, and a trigger uses it to zero the bytes before the holders
//! are killed.
//!
//! Holders read it through `/proc/self/fd/N`; the kernel's map of secret
//! files (keyed by [`FileKey`]) lets the read-path programs stop anyone
//! outside the grant who opens it.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, OwnedFd},
    ptr::NonNull,
};

use guardian_ebpf::FileKey;
use rustix::{
    fs::{MemfdFlags, SealFlags},
    mm::{MapFlags, ProtFlags},
};

/// A secret as a sealed, locked memfd.
pub struct SecretFile {
    fd: OwnedFd,
    /// The guardian's writable mapping of the whole file (`None` for an
    /// empty secret, which has nothing to map).
    map: Option<NonNull<u8>>,
    len: usize,
    key: FileKey,
}

// SAFETY: the mapping is owned by this value alone; nothing else in the
// guardian holds its address, so moving it to another thread is sound.
unsafe impl Send for SecretFile {}

impl SecretFile {
    /// A file named `memfd:ningen-shikkaku:NAME` holding `bytes`.
    pub fn new(name: &str, bytes: &[u8]) -> io::Result<Self> {
        let fd = create(&format!("ningen-shikkaku:{name}"))?;
        rustix::fs::ftruncate(&fd, bytes.len() as u64)?;
        let map = match bytes.len() {
            0 => None,
            len => Some(map_locked(&fd, len)?),
        };
        let mut file = Self {
            key: key_of(&fd)?,
            fd,
            map,
            len: bytes.len(),
        };
        file.bytes_mut().copy_from_slice(bytes);
        // FUTURE_WRITE, not WRITE: the guardian's mapping stays writable,
        // so a trigger can still zero the bytes; nobody else can write.
        let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::FUTURE_WRITE | SealFlags::SEAL;
        rustix::fs::fcntl_add_seals(&file.fd, seals)?;
        Ok(file)
    }

    /// A descriptor of the file, to hand to a holder.
    pub fn handle(&self) -> io::Result<OwnedFd> {
        self.fd.as_fd().try_clone_to_owned()
    }

    /// The file as the kernel's programs recognise it.
    pub fn key(&self) -> FileKey {
        self.key
    }

    /// Zeroes the bytes, through the guardian's mapping, with writes the
    /// compiler cannot elide: every reader now reads zeros.
    pub fn wipe(&mut self) {
        zeroize::Zeroize::zeroize(self.bytes_mut());
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self.map {
            // SAFETY: the mapping is `len` bytes, readable and writable, and
            // lives until drop; `&mut self` makes this the only reference.
            Some(map) => unsafe { std::slice::from_raw_parts_mut(map.as_ptr(), self.len) },
            None => &mut [],
        }
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        self.wipe();
        if let Some(map) = self.map.take() {
            // SAFETY: the mapping was made by `map_locked` with this length
            // and is not used after this point.
            unsafe {
                let _ = rustix::mm::munlock(map.as_ptr().cast(), self.len);
                let _ = rustix::mm::munmap(map.as_ptr().cast(), self.len);
            }
        }
    }
}

/// A close-on-exec memfd that can be sealed, and whose content can never be
/// made executable where the kernel knows how to promise that (6.3+).
fn create(name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match rustix::fs::memfd_create(&name, flags | MemfdFlags::NOEXEC_SEAL) {
        Err(rustix::io::Errno::INVAL) => Ok(rustix::fs::memfd_create(&name, flags)?),
        made => Ok(made?),
    }
}

/// A shared, writable, locked mapping of the first `len` bytes of `fd`.
fn map_locked(fd: &OwnedFd, len: usize) -> io::Result<NonNull<u8>> {
    let protection = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: a new mapping at an address the kernel chooses overlaps no
    // memory of this program.
    let address = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            protection,
            MapFlags::SHARED,
            fd,
            0,
        )?
    };
    let map = NonNull::new(address.cast::<u8>()).ok_or(io::ErrorKind::InvalidData)?;
    // SAFETY: the range is the mapping just made.
    if let Err(err) = unsafe { rustix::mm::mlock(address, len) } {
        // SAFETY: as above; it is not used again.
        unsafe {
            let _ = rustix::mm::munmap(address, len);
        }
        return Err(err.into());
    }
    Ok(map)
}

/// The file's device (as the kernel encodes it, `major << 20 | minor`) and
/// inode number.
fn key_of(fd: &OwnedFd) -> io::Result<FileKey> {
    let stat = rustix::fs::fstat(fd)?;
    let dev = (rustix::fs::major(stat.st_dev) << 20) | rustix::fs::minor(stat.st_dev);
    Ok(FileKey {
        ino: stat.st_ino,
        dev,
        pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use std::{fs::File, io::Read, os::unix::fs::FileExt};

    use super::*;

    fn reopened(file: &SecretFile) -> File {
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file.fd)
        );
        File::options().read(true).write(true).open(path).unwrap()
    }

    #[test]
    fn a_secret_file_reads_back_exactly_and_cannot_be_changed_by_its_readers() {
        let file = SecretFile::new("tok", b"s3cret\0\xff").unwrap();
        let mut reader = reopened(&file);
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"s3cret\0\xff");
        assert!(reader.write_at(b"X", 0).is_err(), "writable");
        assert!(reader.set_len(2).is_err(), "shrinkable");
        assert!(reader.set_len(100).is_err(), "growable");
        let handle = File::from(file.handle().unwrap());
        let stat = rustix::fs::fstat(&handle).unwrap();
        assert_eq!(
            stat.st_ino,
            file.key().ino,
            "one inode for every descriptor"
        );
    }

    #[test]
    fn wiping_zeroes_what_every_reader_sees() {
        let mut file = SecretFile::new("tok", b"s3cret").unwrap();
        let reader = reopened(&file);
        file.wipe();
        let mut read = [1u8; 6];
        reader.read_exact_at(&mut read, 0).unwrap();
        assert_eq!(read, [0; 6]);
    }

    #[test]
    fn an_empty_secret_is_an_empty_file() {
        let file = SecretFile::new("empty", b"").unwrap();
        let mut read = Vec::new();
        reopened(&file).read_to_end(&mut read).unwrap();
        assert!(read.is_empty());
    }
}
