//! Values a session outlived. A tamper, a `revoke`, a TTL or `wipe --all`
//! leaves the shell alive, and one that exported `T=$(get tok)` hands the
//! value to every command it starts next. Until the leader exits, the
//! environment rule (`environ.rs`) keeps looking for such a value. Only two
//! keyed hashes of it are kept, never its bytes: the value is wiped as
//! promised, though a value short enough to guess could be confirmed
//! against them by whoever reads the guardian's memory (root).
//!
//! The hashes are polynomial, modulo the prime 2^61 - 1, with bases drawn at
//! random: found in one pass over an environment, with no copy of a window
//! (a cryptographic digest would copy each candidate, the value itself, into
//! its buffer on the unlocked stack). A collision can only make an
//! environment guarded that holds no value, and cannot be crafted without
//! the bases.

#![forbid(unsafe_code)]

use std::hash::{BuildHasher, RandomState};

/// Most values one session keeps looking for; past it, every environment in
/// the session stays guarded (fail closed), since each value costs a pass
/// over every environment read.
const MAX_RETIRED: usize = 64;

/// The hashes' modulus, a Mersenne prime.
const MODULUS: u64 = (1 << 61) - 1;

/// One value: its length and its hash under each base.
#[derive(PartialEq)]
struct Retired {
    len: usize,
    hashes: [u64; 2],
}

/// The values a session's leader outlived.
pub struct RetiredValues {
    /// The two hashes' bases, secret and random.
    bases: [u64; 2],
    values: Vec<Retired>,
    /// More than [`MAX_RETIRED`] were retired.
    overflowed: bool,
}

impl Default for RetiredValues {
    fn default() -> Self {
        let random = RandomState::new();
        let base = |n: u64| 2 + random.hash_one(n) % (MODULUS - 3);
        Self {
            bases: [base(0), base(1)],
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
        if form.is_empty() {
            return;
        }
        let retired = Retired {
            len: form.len(),
            hashes: self.bases.map(|base| hash(base, form)),
        };
        if self.values.contains(&retired) {
            return;
        }
        if self.values.len() == MAX_RETIRED {
            self.overflowed = true;
            return;
        }
        self.values.push(retired);
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
        let leaving = self
            .bases
            .map(|base| (1..len).fold(1, |acc, _| mul_mod(acc, base)));
        let mut hashes = self.bases.map(|base| hash(base, &bytes[..len]));
        for start in 0..=bytes.len() - len {
            if start > 0 {
                let (out, into) = (bytes[start - 1], bytes[start + len - 1]);
                for i in 0..2 {
                    let kept = sub_mod(hashes[i], mul_mod(u64::from(out), leaving[i]));
                    hashes[i] = add_mod(mul_mod(kept, self.bases[i]), u64::from(into));
                }
            }
            if hashes == value.hashes {
                return true;
            }
        }
        false
    }
}

/// The polynomial hash of `bytes` under `base`.
fn hash(base: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |hash, &byte| {
        add_mod(mul_mod(hash, base), u64::from(byte))
    })
}

fn mul_mod(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    // 2^61 = 1 (mod 2^61 - 1): fold the high bits onto the low ones.
    let folded = (product as u64 & MODULUS) + (product >> 61) as u64;
    reduce(reduce(folded))
}

fn add_mod(a: u64, b: u64) -> u64 {
    reduce(a + b)
}

fn sub_mod(a: u64, b: u64) -> u64 {
    reduce(a + MODULUS - b)
}

/// `x` modulo [`MODULUS`], for `x` below twice it.
fn reduce(x: u64) -> u64 {
    if x >= MODULUS { x - MODULUS } else { x }
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

    #[test]
    fn the_modular_arithmetic_matches_u128_arithmetic() {
        let m = u128::from(MODULUS);
        for (a, b) in [
            (MODULUS - 1, MODULUS - 1),
            (2, MODULUS - 2),
            (0, 5),
            (1 << 60, 3),
        ] {
            let (wa, wb) = (u128::from(a), u128::from(b));
            assert_eq!(u128::from(mul_mod(a, b)), wa * wb % m);
            assert_eq!(u128::from(add_mod(a, b)), (wa + wb) % m);
            assert_eq!(u128::from(sub_mod(a, b)), (wa + m - wb) % m);
        }
    }
}
