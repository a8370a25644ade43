//! Secrets delivered as files (`exec --file`): made for an exec's grant from
//! the vault's bytes, guarded in the kernel so that only the grant's holders
//! may open them, zeroed before the grant's holders are killed, and dropped
//! with the grant. Each counts against its user's locked bytes for as long
//! as it lives, since the guardian keeps its pages locked.

#![forbid(unsafe_code)]

use std::{collections::HashSet, os::fd::OwnedFd};

use super::{
    Core, RequestError, SecretKey,
    budget::Charge,
    os::{KernelMaps, Os, SecretFile},
    sessions::GrantId,
};
use crate::os::peer::Peer;

/// A secret file of a grant, and what it costs its user.
pub(super) struct GrantFile<F> {
    file: F,
    _charge: Charge,
}

/// An exec's new files, and a descriptor of each for the reply.
type Made<F> = (Vec<GrantFile<F>>, Vec<OwnedFd>);

impl<O: Os> Core<O> {
    /// Files of the secrets under `keys` for `peer`'s exec, charged to its
    /// user, with a descriptor of each for the reply.
    pub(super) fn make_files(
        &self,
        peer: &Peer,
        keys: &[SecretKey],
    ) -> Result<Made<O::SecretFile>, RequestError> {
        let mut files = Vec::with_capacity(keys.len());
        let mut handles = Vec::with_capacity(keys.len());
        for key in keys {
            let secret = self
                .vault
                .get(key)
                .ok_or_else(|| RequestError::NoSuchSecret(key.name.clone()))?;
            let charge = self.budget.charge(peer.uid, secret.bytes.len())?;
            let file = self
                .os
                .secret_file(&key.name.to_string(), secret.bytes.as_slice())
                .map_err(RequestError::SecretFile)?;
            handles.push(file.handle().map_err(RequestError::SecretFile)?);
            files.push(GrantFile {
                file,
                _charge: charge,
            });
        }
        Ok((files, handles))
    }

    /// Gives `files` to `grant`: from now on only its holders may open them.
    pub(super) fn give_files(
        &mut self,
        grant: GrantId,
        files: Vec<GrantFile<O::SecretFile>>,
    ) -> Result<(), RequestError> {
        if files.is_empty() {
            return Ok(());
        }
        if let Some(kernel) = &mut self.kernel {
            for held in &files {
                kernel
                    .guard_file(held.file.key(), grant)
                    .map_err(RequestError::GuardFile)?;
            }
        }
        self.files.entry(grant).or_default().extend(files);
        Ok(())
    }

    /// Zeroes the files of `grants`, before their holders are killed.
    pub(super) fn wipe_files(&mut self, grants: &HashSet<GrantId>) {
        for grant in grants {
            for held in self.files.get_mut(grant).into_iter().flatten() {
                held.file.wipe();
            }
        }
    }

    /// Drops the files of `grant`, which is gone.
    pub(super) fn drop_files(&mut self, grant: GrantId) {
        let Some(files) = self.files.remove(&grant) else {
            return;
        };
        if let Some(kernel) = &mut self.kernel {
            for held in &files {
                kernel.forget_file(held.file.key());
            }
        }
    }
}
