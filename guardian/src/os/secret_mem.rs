//! Locked memory for secret bytes, and nothing else.
//!
//! A [`SecretBuf`] lives in memfd_secret(2) pages where the kernel offers them
//! (removed from the kernel's direct map, never swapped, unreadable through
//! /proc/PID/mem), otherwise in mlock'd pages marked MADV_DONTDUMP between guard
//! pages (memsec). Either way the bytes are wiped with zeroize's volatile writes
//! before the pages are released, so the wipe cannot be optimised away.

use std::{
    io::{self, Read},
    num::NonZeroUsize,
    os::fd::{FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, mprotect, munmap};
use zeroize::Zeroize;

text_enum! {
    /// Which kind of pages hold secrets in this process.
    pub enum Backing {
        /// memfd_secret(2): pages removed from the kernel's direct map.
        MemfdSecret = "memfd_secret",
        /// mmap + mlock + MADV_DONTDUMP with guard pages (memsec).
        Mlock = "mlock",
    }
}

/// Errors from allocating locked memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A secret must hold at least one byte.
    #[error("a secret cannot be empty")]
    Empty,
    /// Neither backing could allocate the pages.
    #[error("cannot allocate {0} bytes of locked memory")]
    OutOfMemory(usize),
}

impl From<MemoryError> for io::Error {
    fn from(err: MemoryError) -> Self {
        io::Error::new(io::ErrorKind::OutOfMemory, err)
    }
}

static BACKING: OnceLock<Backing> = OnceLock::new();
static LOCKED_BYTES: AtomicUsize = AtomicUsize::new(0);

#[cfg(any(test, feature = "fuzzing"))]
std::thread_local! {
    /// Buffers alive on this thread: the state machine's tests run on one
    /// thread each, so this shows whether a secret was wiped before a kill.
    static LIVE_ON_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Secret buffers created and not yet wiped on the calling thread (tests only).
#[cfg(any(test, feature = "fuzzing"))]
pub fn live_on_this_thread() -> usize {
    LIVE_ON_THREAD.with(std::cell::Cell::get)
}

/// The backing in use, found by trying memfd_secret once.
pub fn backing() -> Backing {
    *BACKING.get_or_init(|| match memfd_secret() {
        Some(_) => Backing::MemfdSecret,
        None => Backing::Mlock,
    })
}

/// A new memfd_secret(2) file, or None where the kernel refuses one.
fn memfd_secret() -> Option<OwnedFd> {
    // SAFETY: memfd_secret takes flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bytes currently held in pages that are known to be locked.
pub fn locked_bytes() -> usize {
    LOCKED_BYTES.load(Ordering::Relaxed)
}

/// A fixed-capacity buffer of secret bytes in locked pages, wiped on drop.
pub struct SecretBuf {
    ptr: NonNull<[u8]>,
    len: usize,
    backing: Backing,
    locked: bool,
}

// SAFETY: the buffer exclusively owns its allocation; nothing else aliases it.
unsafe impl Send for SecretBuf {}
// SAFETY: shared references only read the bytes; all mutation needs `&mut self`.
unsafe impl Sync for SecretBuf {}

impl SecretBuf {
    /// Allocates `capacity` bytes, all zero, with `len()` equal to `capacity`.
    pub fn new(capacity: usize) -> Result<Self, MemoryError> {
        if capacity == 0 {
            return Err(MemoryError::Empty);
        }
        // When the kernel refuses memfd_secret for this buffer (memory or
        // RLIMIT_MEMLOCK exhausted), it falls back to mlock'd pages.
        let secret = (backing() == Backing::MemfdSecret)
            .then(|| SecretMapping::new(capacity, &SPARE_PAGES))
            .flatten();
        let (ptr, backing) = match secret {
            Some(mapping) => (mapping.user, Backing::MemfdSecret),
            // SAFETY: memsec returns None or a fresh allocation of `capacity` bytes.
            None => match unsafe { memsec::malloc_sized(capacity) } {
                Some(ptr) => (ptr, Backing::Mlock),
                None => return Err(MemoryError::OutOfMemory(capacity)),
            },
        };
        let mut buf = Self {
            ptr,
            len: capacity,
            backing,
            locked: false,
        };
        buf.as_mut_slice().zeroize();
        #[cfg(any(test, feature = "fuzzing"))]
        LIVE_ON_THREAD.with(|live| live.set(live.get() + 1));
        buf.locked = buf.lock();
        if buf.locked {
            LOCKED_BYTES.fetch_add(capacity, Ordering::Relaxed);
        }
        Ok(buf)
    }

    /// A copy in a new locked buffer.
    pub fn try_clone(&self) -> Result<Self, MemoryError> {
        let mut copy = Self::new(self.len)?;
        copy.as_mut_slice().copy_from_slice(self.as_slice());
        Ok(copy)
    }

    /// Reads `reader` to its end into locked memory, refusing more than `max`
    /// bytes. Growth copies into a bigger locked buffer and wipes the old one,
    /// so no unwiped copy is left behind.
    pub fn read_to_end(reader: &mut impl Read, max: usize) -> io::Result<Self> {
        let mut buf = Self::new(4096.min(max.max(1)))?;
        let mut filled = 0;
        loop {
            if filled == buf.capacity() {
                if filled >= max {
                    let mut probe = [0u8; 1];
                    if reader.read(&mut probe)? == 0 {
                        break;
                    }
                    probe.zeroize();
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("secret is larger than the limit of {max} bytes"),
                    ));
                }
                let mut bigger = Self::new((filled * 2).min(max))?;
                bigger.as_mut_slice()[..filled].copy_from_slice(&buf.as_slice()[..filled]);
                buf = bigger;
            }
            match reader.read(&mut buf.as_mut_slice()[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.ptr.len()
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shortens the buffer, wiping the bytes cut off.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            let cut = self.len;
            self.as_full_mut_slice()[len..cut].zeroize();
            self.len = len;
        }
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is a live allocation of capacity() >= len bytes owned by self.
        unsafe { &self.ptr.as_ref()[..self.len] }
    }

    /// The bytes in use, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.as_full_mut_slice()[..len]
    }

    fn as_full_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live allocation owned exclusively by self.
        unsafe { self.ptr.as_mut() }
    }

    /// Confirms the pages are locked. memfd_secret pages are always locked;
    /// memsec ignores an mlock failure, so mlock the pages again to learn it.
    fn lock(&mut self) -> bool {
        if self.backing == Backing::MemfdSecret {
            return true;
        }
        let page = page_size();
        let start = self.ptr.as_ptr() as *mut u8 as usize & !(page - 1);
        let end = (self.ptr.as_ptr() as *mut u8 as usize + self.capacity()).next_multiple_of(page);
        // SAFETY: the range covers only pages of this allocation; mlock has no other effect.
        unsafe { libc::mlock(start as *const libc::c_void, end - start) == 0 }
    }
}

impl Drop for SecretBuf {
    fn drop(&mut self) {
        self.as_full_mut_slice().zeroize();
        #[cfg(any(test, feature = "fuzzing"))]
        LIVE_ON_THREAD.with(|live| live.set(live.get() - 1));
        if self.locked {
            LOCKED_BYTES.fetch_sub(self.capacity(), Ordering::Relaxed);
        }
        match self.backing {
            Backing::MemfdSecret => SecretMapping::unmap(self.ptr, &SPARE_PAGES),
            // SAFETY: allocated by malloc_sized, freed once, after the wipe.
            Backing::Mlock => unsafe { memsec::free(self.ptr) },
        }
    }
}

/// A memfd_secret(2) mapping laid out as `[guard page][data pages][guard page]`,
/// with the buffer at the end of the data pages so an overrun faults on the
/// guard. The descriptor is closed as soon as the pages are mapped (the
/// mapping keeps them), so secrets cost no file descriptors, and untouched
/// guard pages are never resident: one secret of up to a page costs one page.
struct SecretMapping {
    user: NonNull<[u8]>,
}

impl SecretMapping {
    fn new(capacity: usize, spares: &SparePages) -> Option<Self> {
        let page = page_size();
        let data = capacity.next_multiple_of(page);
        let base = match data == page {
            true => spares.take().or_else(|| Self::map(data)),
            false => Self::map(data),
        }?;
        // SAFETY: page + data - capacity .. page + data is inside the mapping.
        let user = unsafe { base.add(page + data - capacity) };
        let user = NonNull::slice_from_raw_parts(NonNull::new(user)?, capacity);
        Some(Self { user })
    }

    /// Maps `[guard][data bytes][guard]` of a new memfd_secret, returning its
    /// base; None if any step fails, guard pages included, with nothing left
    /// mapped. The descriptor is closed on return: the mapping keeps the pages.
    fn map(data: usize) -> Option<*mut u8> {
        let page = page_size();
        let total = data + 2 * page;
        let fd = memfd_secret()?;
        nix::unistd::ftruncate(&fd, libc::off_t::try_from(total).ok()?).ok()?;
        // SAFETY: a new shared mapping of the file just sized, at an address
        // the kernel picks, so it overlaps no memory in use.
        let base = unsafe {
            mmap(
                None,
                NonZeroUsize::new(total)?,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .ok()?;
        // SAFETY: both guard ranges lie inside the mapping just created, which
        // nothing uses yet.
        let guarded = unsafe {
            mprotect(base, page, ProtFlags::PROT_NONE)
                .and_then(|()| mprotect(base.byte_add(page + data), page, ProtFlags::PROT_NONE))
        };
        if guarded.is_err() {
            // An overrun would reach the next mapping instead of faulting.
            // SAFETY: the whole mapping just made, which nothing uses.
            unsafe { unmap_whole(base.as_ptr().cast(), data) };
            return None;
        }
        Some(base.as_ptr().cast())
    }

    /// Releases the mapping that holds `user` (already wiped by the caller):
    /// a one-page mapping is wiped whole and kept in `spares` while there is
    /// room, anything else is unmapped.
    fn unmap(user: NonNull<[u8]>, spares: &SparePages) {
        let page = page_size();
        let data = user.len().next_multiple_of(page);
        let base = (user.as_ptr().cast::<u8>() as usize + user.len()) - data - page;
        if data == page {
            // SAFETY: the data page of this mapping, owned by the buffer being dropped.
            let whole = unsafe { std::slice::from_raw_parts_mut((base + page) as *mut u8, page) };
            whole.zeroize();
            if spares.keep(base) {
                return;
            }
        }
        // SAFETY: recomputes exactly the mapping SecretMapping::new made for a
        // buffer of this length; it is unmapped once, from Drop.
        unsafe { unmap_whole(base as *mut u8, data) };
    }
}

/// Unmaps the `[guard][data bytes][guard]` mapping at `base`.
///
/// # Safety
///
/// `base` and `data` must describe a whole mapping made by
/// [`SecretMapping::map`], which nothing uses any more.
unsafe fn unmap_whole(base: *mut u8, data: usize) {
    let Some(base) = NonNull::new(base) else {
        return;
    };
    // SAFETY: the caller hands over the whole mapping, unused from now on.
    // A failure (only for a bad range) leaves it mapped: a leak, not a fault.
    let _ = unsafe { munmap(base.cast(), data + 2 * page_size()) };
}

/// Wiped one-page mappings (the size of almost every secret), kept for reuse.
/// A new memfd_secret page is taken out of the kernel's direct map, and
/// freeing it puts it back; both flush the TLB of every CPU. At thousands of
/// `get`s a second, each with a reply copy, those flushes took a fifth of the
/// machine's CPU. Addresses are stored as integers; the mappings are owned here.
struct SparePages(Mutex<Vec<usize>>);

/// The process's pool, shared by every [`SecretBuf`].
static SPARE_PAGES: SparePages = SparePages(Mutex::new(Vec::new()));

/// At most this many spares (256 KiB with 4 KiB pages) stay mapped.
const MAX_SPARE_PAGES: usize = 64;

impl SparePages {
    /// A spare's base address, if there is one.
    fn take(&self) -> Option<*mut u8> {
        let base = self.0.lock().ok()?.pop()?;
        Some(base as *mut u8)
    }

    /// Keeps the wiped mapping at `base` as a spare; false when the pool is full.
    fn keep(&self, base: usize) -> bool {
        let Ok(mut spares) = self.0.lock() else {
            return false;
        };
        if spares.len() >= MAX_SPARE_PAGES {
            return false;
        }
        spares.push(base);
        true
    }
}

impl std::fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBuf({} bytes, {:?})", self.len, self.backing)
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_to_end_keeps_bytes_exactly_across_growth() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let buf = SecretBuf::read_to_end(&mut &data[..], 1 << 20).unwrap();
        assert_eq!(buf.as_slice(), &data[..]);
    }

    #[test]
    fn read_to_end_refuses_more_than_the_limit() {
        let data = vec![7u8; 5000];
        let err = SecretBuf::read_to_end(&mut &data[..], 4999).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            SecretBuf::read_to_end(&mut &data[..], 5000).unwrap().len(),
            5000
        );
    }

    /// A pool of this test's own: tests on other threads allocate from the
    /// process's pool at any moment, and would take a spare put there.
    #[test]
    fn a_released_one_page_mapping_is_kept_wiped_for_reuse() {
        if backing() != Backing::MemfdSecret {
            return;
        }
        let page = page_size();
        let spares = SparePages(Mutex::new(Vec::new()));
        let first = SecretMapping::new(100, &spares).unwrap();
        let end = first.user.as_ptr().cast::<u8>() as usize + first.user.len();
        assert_eq!(end % page, 0, "not flush against the guard page");
        let base = end - 2 * page;
        // SAFETY: the data page of the mapping just made; nothing else uses it.
        let data = unsafe { std::slice::from_raw_parts_mut((base + page) as *mut u8, page) };
        data.fill(0xa5);
        SecretMapping::unmap(first.user, &spares);
        assert_eq!(*spares.0.lock().unwrap(), [base], "the page was not kept");
        // SAFETY: the spare's data page stays mapped; the pool owns it now.
        let data = unsafe { std::slice::from_raw_parts((base + page) as *const u8, page) };
        assert!(data.iter().all(|&b| b == 0), "spare page not wiped");
        let second = SecretMapping::new(8, &spares).unwrap();
        let second_end = second.user.as_ptr().cast::<u8>() as usize + second.user.len();
        assert_eq!(second_end, end, "the spare was not reused");
        assert!(spares.0.lock().unwrap().is_empty());
        // SAFETY: the one-page mapping at `base`, made by map above and used by
        // nothing else, is unmapped once.
        unsafe { unmap_whole(base as *mut u8, page) };
    }

    #[test]
    fn the_data_page_lies_between_inaccessible_guard_pages() {
        if backing() != Backing::MemfdSecret {
            return;
        }
        let page = page_size();
        let base = SecretMapping::map(page).unwrap() as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        // The permissions of the mapping that holds `address`.
        let perms = |address: usize| {
            maps.lines().find_map(|line| {
                let (range, rest) = line.split_once(' ')?;
                let (from, to) = range.split_once('-')?;
                let from = usize::from_str_radix(from, 16).ok()?;
                let to = usize::from_str_radix(to, 16).ok()?;
                (from..to).contains(&address).then(|| rest[..4].to_owned())
            })
        };
        assert_eq!(perms(base).as_deref(), Some("---s"), "{maps}");
        assert_eq!(perms(base + page).as_deref(), Some("rw-s"), "{maps}");
        assert_eq!(perms(base + 2 * page).as_deref(), Some("---s"), "{maps}");
        // SAFETY: the mapping just made, used by nothing, is unmapped once.
        unsafe { unmap_whole(base as *mut u8, page) };
    }

    #[test]
    fn empty_buffers_are_refused() {
        assert!(matches!(SecretBuf::new(0), Err(MemoryError::Empty)));
    }

    #[test]
    fn truncate_wipes_the_tail() {
        let mut buf = SecretBuf::new(8).unwrap();
        buf.as_mut_slice().copy_from_slice(b"abcdefgh");
        buf.truncate(3);
        assert_eq!(buf.as_slice(), b"abc");
        assert!(buf.as_full_mut_slice()[3..].iter().all(|&b| b == 0));
    }
}
