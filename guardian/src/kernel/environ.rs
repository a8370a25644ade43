//! The environment stamps of wards (see `guardian_ebpf::maps::ENVIRON_STAMPS`):
//! the guardian stamps a ward that has none, and lists the stamps whose
//! environment it read and found free of its owner's values.

use aya::maps::{HashMap, MapData};
use guardian_ebpf::{ENVIRON_CHANGING, GUARDIAN_STAMP};

use super::{KernelLink, NOEXIST, map_error};
use crate::os::process::{Pid, Uid};

/// The two maps, and the guardian's next stamp.
pub(super) struct Environs {
    pub(super) stamps: HashMap<MapData, u32, u64>,
    pub(super) clean: HashMap<MapData, u64, u32>,
    pub(super) next_stamp: u64,
}

impl KernelLink {
    /// The stamp of `pid`'s environment now: its own, or a new one the
    /// guardian gives a ward that has none. `None` while an exec is
    /// replacing it (the exec's own stamp and record follow), or when
    /// `pid` is no ward.
    pub fn environ_stamp(&mut self, pid: Pid) -> Option<u64> {
        let key = pid.raw() as u32;
        self.wards.get(&key, 0).ok()?;
        self.environ.next_stamp += 1;
        let fresh = GUARDIAN_STAMP | self.environ.next_stamp;
        // Only where the programs wrote none: theirs is always newer.
        if self.environ.stamps.insert(key, fresh, NOEXIST).is_ok() {
            return Some(fresh);
        }
        self.current_stamp(pid)
    }

    /// The uid whose values ward `pid` may carry: its session's owner.
    pub fn ward_owner(&self, pid: Pid) -> Option<Uid> {
        let ward = self.wards.get(&(pid.raw() as u32), 0).ok()?;
        Some(Uid(guardian_ebpf::ward_owner(ward)))
    }

    /// The stamp `pid`'s environment has now, unless an exec is replacing it.
    pub fn current_stamp(&self, pid: Pid) -> Option<u64> {
        let stamp = self.environ.stamps.get(&(pid.raw() as u32), 0).ok()?;
        (stamp != ENVIRON_CHANGING).then_some(stamp)
    }

    /// True while `stamp` is listed as clean.
    pub fn is_environ_clean(&self, stamp: u64) -> bool {
        self.environ.clean.get(&stamp, 0).is_ok()
    }

    /// Lists `stamp` as clean (its environment, read from `pid`, holds no
    /// value) or takes it off the list.
    pub fn set_environ_clean(
        &mut self,
        stamp: u64,
        pid: Pid,
        clean: bool,
    ) -> Result<(), super::KernelError> {
        match clean {
            true => self
                .environ
                .clean
                .insert(stamp, pid.raw() as u32, 0)
                .map_err(map_error(guardian_ebpf::maps::CLEAN_ENVIRONS)),
            false => {
                let _ = self.environ.clean.remove(&stamp);
                Ok(())
            }
        }
    }
}
