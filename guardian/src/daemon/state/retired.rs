//! Values a session outlived. A tamper, a `revoke`, a TTL or `wipe --all`
//! leaves the shell alive, and one that exported `T=$(get tok)` hands the
//! value to every command it starts next. Until the leader exits, the
//! environment rule (`environ.rs`) keeps looking for such a value. Only a
//! digest of it is kept, never its bytes: the value is wiped as promised,
//! though a value short enough to guess could be confirmed against the
//! digest by whoever reads the guardian's memory (root).

#![forbid(unsafe_code)]

use std::hash::{BuildHasher, RandomState};

use sha2::{Digest, Sha256};

/// Most values one session keeps looking for; past it, every environment in
/// the session stays guarded (fail closed), since each value costs a pass
/// over every environment read.
const MAX_RETIRED: usize = 64;

/// One value: its length, a rolling hash that finds candidate windows in
/// one pass over an environment, and the SHA-256 that confirms a window.
struct Retired {
    len: usize,
    rolling: u64,
    digest: [u8; 32],
}

/// The values a session's leader outlived.
pub struct RetiredValues {
    /// The rolling hash's base, drawn at random so that no one can craft
    /// an environment whose every window collides with a value's hash.
    base: u64,
    values: Vec<Retired>,
    /// More than [`MAX_RETIRED`] were retired.
    overflowed: bool,
}

impl Default for RetiredValues {
    fn default() -> Self {
        Self {
            base: RandomState::new().hash_one(0u64) | 1,
            values: Vec::new(),
            overflowed: false,
        }
    }
}

impl RetiredValues {
    /// Keeps looking for `value` without the white space around it (as the
    /// rule does for values held): an environment that holds the whole
    /// value holds that core too, so one entry finds both.
    pub fn retire(&mut self, value: &[u8]) {
        let core = value.trim_ascii();
        let form = if core.is_empty() { value } else { core };
        let digest = sha256(form);
        if form.is_empty() || self.values.iter().any(|known| known.digest == digest) {
            return;
        }
        if self.values.len() == MAX_RETIRED {
            self.overflowed = true;
            return;
        }
        self.values.push(Retired {
            len: form.len(),
            rolling: rolling(self.base, form),
            digest,
        });
    }

    /// True if `environ` holds one of the retired values.
    pub fn found_in(&self, environ: &[u8]) -> bool {
        self.overflowed || self.values.iter().any(|value| self.scan(environ, value))
    }

    /// One pass over `bytes` with a window of `value`'s length.
    fn scan(&self, bytes: &[u8], value: &Retired) -> bool {
        let len = value.len;
        if bytes.len() < len {
            return false;
        }
        // base^(len-1): the weight of the byte that leaves the window.
        let leaving = (1..len).fold(1u64, |acc, _| acc.wrapping_mul(self.base));
        let mut hash = rolling(self.base, &bytes[..len]);
        for start in 0..=bytes.len() - len {
            if start > 0 {
                let (out, into) = (bytes[start - 1], bytes[start + len - 1]);
                hash = hash
                    .wrapping_sub(u64::from(out).wrapping_mul(leaving))
                    .wrapping_mul(self.base)
                    .wrapping_add(u64::from(into));
            }
            if hash == value.rolling && sha256(&bytes[start..start + len]) == value.digest {
                return true;
            }
        }
        false
    }
}

fn rolling(base: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |hash, &byte| {
        hash.wrapping_mul(base).wrapping_add(u64::from(byte))
    })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_value_is_found_anywhere_in_an_environment_and_nothing_else_is() {
        let mut retired = RetiredValues::default();
        retired.retire(b"s3cret-value\n");
        assert!(retired.found_in(b"A=1\0T=s3cret-value\0"));
        assert!(retired.found_in(b"s3cret-value"), "the whole environment");
        assert!(retired.found_in(b"X=s3cret-value\nY"), "with its newline");
        assert!(!retired.found_in(b"T=s3cret-valuE\0"));
        assert!(!retired.found_in(b"s3cret-valu"));
        assert!(!retired.found_in(b""));
    }

    #[test]
    fn past_the_limit_every_environment_stays_guarded() {
        let mut retired = RetiredValues::default();
        for n in 0..MAX_RETIRED {
            retired.retire(format!("value-{n}").as_bytes());
        }
        assert!(!retired.found_in(b"HOME=/root\0"));
        retired.retire(b"one-more");
        assert!(retired.found_in(b"HOME=/root\0"));
    }
}
