//! The kernel's map of secrets delivered as files (`exec --file`): which
//! grant each file was given to, so the read-path programs stop an open of
//! it by anyone outside that grant (see [`maps::SECRET_FILES`]).

use aya::Pod;
use guardian_ebpf::{FileKey, maps};

use super::{
    KernelError, KernelLink, map_error,
    syscalls::{self, Plan},
};

/// [`FileKey`] as aya reads and writes it in a map.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(super) struct Key(FileKey);

// SAFETY: FileKey is repr(C), a u64 and two u32s: no padding, any bits valid.
unsafe impl Pod for Key {}

impl KernelLink {
    /// Lets only `grant`'s holders open the secret file `file`. The first
    /// one attaches the per-call open programs, where they wait for one.
    pub fn guard_file(&mut self, file: FileKey, grant: u32) -> Result<(), KernelError> {
        self.secret_files
            .insert(Key(file), grant, 0)
            .map_err(map_error(maps::SECRET_FILES))?;
        self.files += 1;
        let waiting = self.plan.is_some_and(Plan::opens_on_demand) && self.open_links.is_empty();
        if waiting {
            match syscalls::attach_opens(&mut self.ebpf) {
                Ok(links) => self.open_links = links,
                Err(err) => {
                    self.forget_file(file);
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Forgets the secret file `file`, once its grant is gone; the last one
    /// detaches the per-call open programs, where they wait for one.
    pub fn forget_file(&mut self, file: FileKey) {
        if self.secret_files.remove(&Key(file)).is_ok() {
            self.files = self.files.saturating_sub(1);
        }
        if self.files == 0 && self.plan.is_some_and(Plan::opens_on_demand) {
            syscalls::detach(&mut self.ebpf, std::mem::take(&mut self.open_links));
        }
    }
}
