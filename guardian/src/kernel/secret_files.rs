//! The kernel's map of secrets delivered as files (`exec --file`): which
//! grant each file was given to, so the read-path programs stop an open of
//! it by anyone outside that grant (see [`maps::SECRET_FILES`]).

use aya::Pod;
use guardian_ebpf::{FileKey, maps};

use super::{KernelError, KernelLink, map_error};

/// [`FileKey`] as aya reads and writes it in a map.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(super) struct Key(FileKey);

// SAFETY: FileKey is repr(C), a u64 and two u32s: no padding, any bits valid.
unsafe impl Pod for Key {}

impl KernelLink {
    /// Lets only `grant`'s holders open the secret file `file`.
    pub fn guard_file(&mut self, file: FileKey, grant: u32) -> Result<(), KernelError> {
        self.secret_files
            .insert(Key(file), grant, 0)
            .map_err(map_error(maps::SECRET_FILES))
    }

    /// Forgets the secret file `file`, once its grant is gone.
    pub fn forget_file(&mut self, file: FileKey) {
        let _ = self.secret_files.remove(&Key(file));
    }
}
