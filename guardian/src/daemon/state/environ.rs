//! Which wards' environments anyone may read. Every `ps` on Debian 12 reads
//! every environment, and an environment that holds none of the guardian's
//! values leaks nothing, so only one that may hold a value is guarded
//! (killed, or denied, at the reader's open and read). The programs give each
//! ward's environment a stamp (new at each exec, the parent's at a fork) and
//! guard it until the guardian has read it once and listed its stamp as
//! clean; see `guardian_ebpf::maps::ENVIRON_STAMPS`. The guardian reads:
//! - each ward's new environment after an exec (a kernel event);
//! - every member's when a new value enters its session (`put`,
//!   `put --replace`), since one may already carry it.
//!
//! Every value of the ward's owner (the uid whose session it is in) is
//! looked for, from any of that user's sessions: a copy made in another of
//! them is found too. Other users' values are not: whether an environment
//! is guarded is visible to whoever reads it, so looking for them would let
//! anyone test guesses at another user's value by exporting them. An
//! environment that cannot be read stays guarded. Values wiped while their
//! session lives on are looked for there too, by digest (`retired.rs`).

#![forbid(unsafe_code)]

use super::{
    Core, SecretKey,
    os::{KernelMaps, Os},
    retired::RetiredValues,
};
use crate::os::process::{Pid, holds_any};

impl<O: Os> Core<O> {
    /// Ward `pid` exec'd: its environment, stamped `stamp`, is read once.
    pub(super) fn environ_changed(&mut self, pid: Pid, stamp: u64) {
        self.check_environ(pid, Some(stamp), None);
    }

    /// The value of `new` entered the session of `members`: each one's
    /// environment is read again (a ward without a stamp gets one). One
    /// already listed clean held none of the other values, and cannot have
    /// changed without an exec (which re-stamps it), so only `new` is looked
    /// for there: a put costs the same with ten thousand values held.
    pub(super) fn check_environs(&mut self, members: &[Pid], new: &SecretKey) {
        for &pid in members {
            self.check_environ(pid, None, Some(new));
        }
    }

    /// Reads `pid`'s environment, whose stamp is `stamp` (or the one it
    /// has now), and lists the stamp as clean when no value is in it, or
    /// takes it off the list when one is; where the stamp is clean already,
    /// only `new` is looked for.
    fn check_environ(&mut self, pid: Pid, stamp: Option<u64>, new: Option<&SecretKey>) {
        let Some(kernel) = &mut self.kernel else {
            return;
        };
        let Some(stamp) = stamp.or_else(|| kernel.environ_stamp(pid)) else {
            return; // no ward, or an exec under way: its own event follows
        };
        let Some(owner) = kernel.ward_owner(pid) else {
            return;
        };
        let only = new.filter(|_| kernel.is_environ_clean(stamp));
        let values: Vec<&[u8]> = match only {
            Some(key) => self
                .vault
                .get(key)
                .filter(|_| key.owner == owner)
                .map(|secret| secret.bytes.as_slice())
                .into_iter()
                .collect(),
            None => self
                .vault
                .owned_by(owner)
                .map(|(_, secret)| secret.bytes.as_slice())
                .collect(),
        };
        // The owner's values retired in any of its sessions, as for values
        // held: a ward keeps the leader it was first marked for (a tmux
        // server started from another session). A clean stamp was read
        // while the retired values were held.
        let retired: Vec<&RetiredValues> = match only {
            Some(_) => Vec::new(),
            None => self
                .sessions
                .leaders
                .values()
                .filter(|leader| leader.owner == owner)
                .map(|leader| &leader.retired)
                .collect(),
        };
        let holds = |environ: &[u8]| {
            holds_any(environ, &values) || retired.iter().any(|set| set.found_in(environ))
        };
        let clean = matches!(self.os.environ_holds(pid, &holds), Ok(false));
        let Some(kernel) = &mut self.kernel else {
            return;
        };
        // What was read is the stamp's environment only if the ward still
        // has that stamp: an exec since, or a pid reused, changes it.
        if kernel.current_stamp(pid) != Some(stamp) {
            return;
        }
        if let Err(err) = kernel.set_environ_clean(stamp, pid, clean) {
            tracing::warn!(%err, %pid, "environment left guarded");
        }
    }
}
