//! The secrets themselves: locked bytes keyed by owner and name, with the
//! leader they are bound to and their lifetime.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{budget::Charge, os::Task};
use crate::{
    os::{
        process::{Pid, Uid},
        secret_mem::SecretBuf,
    },
    protocol::SecretName,
};

/// A secret's identity: names are per user, so one user's name never reveals
/// or collides with another's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretKey {
    /// The uid that stored it.
    pub owner: Uid,
    /// Its name.
    pub name: SecretName,
}

/// A stored secret. Dropping it wipes its bytes.
pub struct Secret {
    /// Distinguishes this secret from a later one with the same key.
    pub id: u64,
    /// The plaintext, in locked pages.
    pub bytes: SecretBuf,
    /// Its size, against its owner's budget.
    pub charge: Charge,
    /// The leader whose death wipes it.
    pub leader: Pid,
    /// When it was stored.
    pub created: Instant,
    /// When its TTL runs out, with the timer that enforces it (cancelled
    /// when the secret is dropped).
    pub expiry: Option<(Instant, Task)>,
}

impl Secret {
    /// Time left at `now` before the TTL expires.
    pub fn ttl_left(&self, now: Instant) -> Option<Duration> {
        self.expiry
            .as_ref()
            .map(|(at, _)| at.saturating_duration_since(now))
    }
}

/// Every secret the guardian holds.
#[derive(Default)]
pub struct Vault {
    secrets: HashMap<SecretKey, Secret>,
}

impl Vault {
    /// The secret under `key`.
    pub fn get(&self, key: &SecretKey) -> Option<&Secret> {
        self.secrets.get(key)
    }

    /// Stores a secret; the caller has checked that `key` is free.
    pub fn insert(&mut self, key: SecretKey, secret: Secret) {
        self.secrets.insert(key, secret);
    }

    /// Puts new bytes in place of the secret under `key`'s, keeping its
    /// binding, TTL and id; the old bytes are wiped as they drop. Returns
    /// the leader it stays bound to, if there was one.
    pub fn replace(
        &mut self,
        key: &SecretKey,
        bytes: SecretBuf,
        charge: Charge,
        now: Instant,
    ) -> Option<Pid> {
        let secret = self.secrets.get_mut(key)?;
        secret.bytes = bytes;
        secret.charge = charge;
        secret.created = now;
        Some(secret.leader)
    }

    /// Removes and wipes the secret under `key`; returns whether there was one.
    pub fn wipe(&mut self, key: &SecretKey) -> bool {
        // Dropping the Secret drops its SecretBuf, which zeroizes the pages.
        self.secrets.remove(key).is_some()
    }

    /// Keys of the secrets bound to `leader`.
    pub fn bound_to(&self, leader: Pid) -> Vec<SecretKey> {
        self.secrets
            .iter()
            .filter(|(_, s)| s.leader == leader)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Keys of every secret.
    pub fn keys(&self) -> Vec<SecretKey> {
        self.secrets.keys().cloned().collect()
    }

    /// Every secret.
    pub fn iter(&self) -> impl Iterator<Item = (&SecretKey, &Secret)> {
        self.secrets.iter()
    }

    /// The secrets of `owner`.
    pub fn owned_by(&self, owner: Uid) -> impl Iterator<Item = (&SecretKey, &Secret)> {
        self.secrets
            .iter()
            .filter(move |(key, _)| key.owner == owner)
    }

    /// Number of secrets.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// True when no secret is held.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}
