//! Locked memory per user: every secret a user stores and every copy in a
//! reply being sent to them holds a [`Charge`] against their budget, released
//! when the bytes are wiped. One user cannot make the guardian lock more than
//! `max_locked_bytes_per_uid`, however they ask.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::os::process::Uid;

/// The budget of every user; clones share it.
#[derive(Clone)]
pub struct Budget {
    limit: usize,
    used: Arc<Mutex<HashMap<Uid, usize>>>,
}

/// Bytes charged to a user, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    uid: Uid,
    bytes: usize,
    used: Arc<Mutex<HashMap<Uid, usize>>>,
}

/// A charge that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this would lock more than this user's limit of {limit} bytes (in use: {used})")]
pub struct OverBudget {
    /// The limit.
    pub limit: usize,
    /// Bytes already charged to the user.
    pub used: usize,
}

impl Budget {
    /// Each user may lock `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: Arc::default(),
        }
    }

    /// Charges `bytes` to `uid`, if they fit.
    pub fn charge(&self, uid: Uid, bytes: usize) -> Result<Charge, OverBudget> {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = used.entry(uid).or_default();
        match mine.checked_add(bytes) {
            Some(total) if total <= self.limit => *mine = total,
            _ => {
                return Err(OverBudget {
                    limit: self.limit,
                    used: *mine,
                });
            }
        }
        Ok(Charge {
            uid,
            bytes,
            used: Arc::clone(&self.used),
        })
    }

    /// Bytes charged to `uid` now.
    pub fn used(&self, uid: Uid) -> usize {
        let used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        used.get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mine) = used.get_mut(&self.uid) {
            *mine = mine.saturating_sub(self.bytes);
            if *mine == 0 {
                used.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_limit_and_come_back_when_dropped() {
        let budget = Budget::new(100);
        let first = budget.charge(Uid(1), 60).unwrap();
        assert_eq!(
            budget.charge(Uid(1), 41).unwrap_err(),
            OverBudget {
                limit: 100,
                used: 60
            }
        );
        assert!(budget.charge(Uid(2), 100).is_ok(), "per user");
        assert!(budget.charge(Uid(1), usize::MAX).is_err(), "no overflow");
        drop(first);
        assert_eq!(budget.used(Uid(1)), 0);
        assert!(budget.charge(Uid(1), 100).is_ok());
    }
}
