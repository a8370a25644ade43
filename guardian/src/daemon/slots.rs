//! Connection slots: how many connections the guardian serves at once, and
//! how many of them one user may hold, so that no user can starve the others
//! by opening connections and leaving them idle. Root has slots kept for it
//! alone, so `wipe --all` and `status` answer while every user is at their cap.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::os::process::Uid;

/// The limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once, over all users.
    pub total: usize,
    /// Connections one non-root user may hold at once.
    pub per_uid: usize,
    /// Slots of `total` that only root may take.
    pub root_reserve: usize,
}

impl Limits {
    /// The limits for a guardian allowed `open_files` descriptors. Each
    /// connection costs three (socket, pidfd, /proc status), so connections
    /// get at most three eighths of them, and never more than 1,024.
    pub fn for_descriptors(open_files: u64) -> Self {
        let total = usize::try_from(open_files / 8)
            .unwrap_or(usize::MAX)
            .clamp(16, 1024);
        Self {
            total,
            per_uid: (total / 4).clamp(4, 32),
            root_reserve: (total / 16).max(2),
        }
    }
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// This user holds `per_uid` connections already.
    #[error("too many connections from uid {uid} (at most {limit} at once)")]
    User {
        /// The user.
        uid: Uid,
        /// The cap.
        limit: usize,
    },
    /// The guardian serves as many connections as it will.
    #[error("the guardian is serving its maximum of {0} connections; try again")]
    Guardian(usize),
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_uid: HashMap<Uid, usize>,
}

/// The slots in use, shared by every connection task.
#[derive(Clone)]
pub struct Slots {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// A slot, given back when dropped.
pub struct Slot {
    uid: Uid,
    counts: Arc<Mutex<Counts>>,
}

impl Slots {
    /// No slots in use.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// Takes a slot for a connection from `uid`.
    pub fn take(&self, uid: Uid) -> Result<Slot, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = self.limits;
        let total = match uid {
            Uid::ROOT => limits.total,
            _ => limits.total.saturating_sub(limits.root_reserve),
        };
        if counts.total >= total {
            return Err(Full::Guardian(limits.total));
        }
        let mine = counts.by_uid.entry(uid).or_default();
        if uid != Uid::ROOT && *mine >= limits.per_uid {
            return Err(Full::User {
                uid,
                limit: limits.per_uid,
            });
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot {
            uid,
            counts: Arc::clone(&self.counts),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(mine) = counts.by_uid.get_mut(&self.uid) {
            *mine -= 1;
            if *mine == 0 {
                counts.by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        total: 4,
        per_uid: 2,
        root_reserve: 1,
    };

    #[test]
    fn one_user_cannot_take_more_than_its_share() {
        let slots = Slots::new(SMALL);
        let first = slots.take(Uid(1000)).unwrap();
        let _second = slots.take(Uid(1000)).unwrap();
        assert_eq!(
            slots.take(Uid(1000)).err(),
            Some(Full::User {
                uid: Uid(1000),
                limit: 2
            })
        );
        assert!(slots.take(Uid(1001)).is_ok(), "another user still gets in");
        drop(first);
        assert!(slots.take(Uid(1000)).is_ok(), "a slot given back is reused");
    }

    #[test]
    fn the_limits_fit_the_descriptors() {
        let few = Limits::for_descriptors(1024);
        assert_eq!((few.total, few.per_uid, few.root_reserve), (128, 32, 8));
        let many = Limits::for_descriptors(1 << 20);
        assert_eq!(
            (many.total, many.per_uid, many.root_reserve),
            (1024, 32, 64)
        );
    }

    #[test]
    fn root_keeps_its_reserve_when_users_have_taken_the_rest() {
        let slots = Slots::new(SMALL);
        let _taken: Vec<Slot> = [1000, 1000, 1001]
            .into_iter()
            .map(|uid| slots.take(Uid(uid)).unwrap())
            .collect();
        assert_eq!(slots.take(Uid(1002)).err(), Some(Full::Guardian(4)));
        let root = slots.take(Uid::ROOT);
        assert!(root.is_ok(), "the reserve is root's");
        assert_eq!(slots.take(Uid::ROOT).err(), Some(Full::Guardian(4)));
    }
}
