//! The socket protocol between the client commands and the guardian.
//!
//! A message is a frame: a 4-byte little-endian length, then that many bytes of
//! JSON header. Secret bytes never travel inside JSON: a `put` header announces
//! the secret's length and the raw bytes follow the frame; a reply that carries
//! secrets lists their lengths and the raw bytes follow it. Each side can then
//! read secret bytes straight into locked memory. Frames larger than
//! [`MAX_HEADER`] and secrets larger than [`MAX_SECRET`] are refused before any
//! allocation.

#![forbid(unsafe_code)]

use std::{collections::HashSet, fmt, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::os::process::Pid;

mod describe;

pub use describe::{
    AuditFlushes, Containment, FailClosed, ForkTracking, ReadPaths, SecretInfo, StatusInfo,
    TamperLimit, TamperProtection, UNWATCHED_TABLES, WatchMode,
};

/// Largest JSON header accepted, in bytes.
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest secret accepted, in bytes.
pub const MAX_SECRET: usize = 1 << 20;
/// Longest TTL any secret may have, whatever the policy says: a year.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most secrets one `exec` may ask for.
pub const MAX_EXEC_NAMES: usize = 64;
/// Most secret bytes one reply may carry.
pub const MAX_REPLY_BYTES: usize = 4 << 20;

/// A secret's name: 1 to 128 characters from `[A-Za-z0-9._-]`, parsed once at
/// the boundary.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

impl TryFrom<String> for SecretName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 128 || !name.chars().all(valid_char) {
            return Err(format!(
                "invalid secret name {name:?}: use 1 to 128 characters from A-Z a-z 0-9 . _ -"
            ));
        }
        Ok(Self(name))
    }
}

impl From<SecretName> for String {
    fn from(name: SecretName) -> String {
        name.0
    }
}

impl std::str::FromStr for SecretName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::try_from(name.to_owned())
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TTL: one second to [`MAX_TTL`], in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u64", try_from = "u64")]
pub struct Ttl(u64);

impl Ttl {
    /// The TTL of `duration`, rounded up to whole seconds.
    pub fn new(duration: Duration) -> Result<Self, String> {
        let secs = duration
            .as_secs()
            .saturating_add(u64::from(duration.subsec_nanos() > 0));
        Self::try_from(secs)
    }

    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl TryFrom<u64> for Ttl {
    type Error = String;

    fn try_from(secs: u64) -> Result<Self, String> {
        if secs == 0 || secs > MAX_TTL.as_secs() {
            return Err(format!(
                "a TTL of {secs} s is outside 1 s to {}",
                humantime::format_duration(MAX_TTL)
            ));
        }
        Ok(Self(secs))
    }
}

impl From<Ttl> for u64 {
    fn from(ttl: Ttl) -> u64 {
        ttl.0
    }
}

/// The secrets an `exec` asks for: 1 to [`MAX_EXEC_NAMES`], each once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<SecretName>", try_from = "Vec<SecretName>")]
pub struct ExecNames(Vec<SecretName>);

impl ExecNames {
    /// The names, in request order.
    pub fn as_slice(&self) -> &[SecretName] {
        &self.0
    }
}

impl TryFrom<Vec<SecretName>> for ExecNames {
    type Error = String;

    fn try_from(names: Vec<SecretName>) -> Result<Self, String> {
        if names.is_empty() || names.len() > MAX_EXEC_NAMES {
            return Err(format!(
                "an exec asks for 1 to {MAX_EXEC_NAMES} secrets, not {}",
                names.len()
            ));
        }
        let mut seen = HashSet::new();
        if let Some(twice) = names.iter().find(|name| !seen.insert(*name)) {
            return Err(format!("secret {twice} is asked for twice"));
        }
        Ok(Self(names))
    }
}

impl From<ExecNames> for Vec<SecretName> {
    fn from(names: ExecNames) -> Self {
        names.0
    }
}

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Store a secret; `len` raw bytes follow the frame.
    Put {
        /// The secret's name.
        name: SecretName,
        /// Leader to bind to; `None` binds to the caller's session leader.
        bind: Option<Pid>,
        /// Seconds until the secret is wiped regardless of its leader.
        ttl_secs: Option<Ttl>,
        /// Length of the secret bytes after the frame.
        len: usize,
        /// Replace an existing secret of that name (keeping its binding and
        /// TTL) instead of refusing.
        #[serde(default)]
        replace: bool,
    },
    /// Read a secret.
    Get {
        /// The secret's name.
        name: SecretName,
    },
    /// Read secrets and become their holder (with every descendant).
    Exec {
        /// The secrets' names.
        names: ExecNames,
        /// How each name's secret is delivered, in order (empty: every one
        /// as bytes for the environment).
        #[serde(default)]
        delivery: Vec<Delivery>,
    },
    /// Describe the caller's secrets (root with `all`: everyone's), never
    /// their values.
    List {
        /// Every user's secrets (root only).
        #[serde(default)]
        all: bool,
    },
    /// Wipe a secret now and kill its holders.
    Revoke {
        /// The secret's name.
        name: SecretName,
    },
    /// Wipe every secret of the caller (root: every secret) and kill their holders.
    WipeAll {},
    /// Describe the guardian. (Empty struct variants, unlike unit variants,
    /// let `deny_unknown_fields` refuse extra keys.)
    Status {},
}

/// The guardian's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// The request was refused or failed.
    Error {
        /// One line for the user.
        message: String,
        /// What kind of refusal (the client's exit code); a kind this
        /// client does not know (a newer guardian's) reads as `refused`.
        #[serde(default, deserialize_with = "ErrorKind::or_refused")]
        kind: ErrorKind,
    },
    /// The secret is stored and bound.
    Stored {
        /// The leader it is bound to.
        leader: i32,
        /// Holders of the value it replaced that were sent SIGKILL (`put --replace`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaced_holders_killed: Option<usize>,
    },
    /// Secrets follow the frame as raw bytes, in request order, with these
    /// lengths: those an `exec` asked for in its environment. Those it asked
    /// for as files come as descriptors with the frame (SCM_RIGHTS), in
    /// request order too.
    Secrets {
        /// Length of each secret sent as bytes.
        lens: Vec<usize>,
        /// Descriptors sent with the frame.
        #[serde(default, skip_serializing_if = "is_zero")]
        files: usize,
    },
    /// The caller's secrets.
    List {
        /// One entry per secret.
        secrets: Vec<SecretInfo>,
    },
    /// The secrets were wiped and their holders signalled.
    Wiped {
        /// Secrets wiped.
        secrets: usize,
        /// Holders that were sent SIGKILL.
        holders_killed: usize,
    },
    /// The secret was wiped and its holders signalled.
    Revoked {
        /// Holders that were sent SIGKILL.
        holders_killed: usize,
    },
    /// The guardian's state (boxed: it is much larger than the other answers).
    Status(Box<StatusInfo>),
}

text_enum! {
    /// How an `exec` wants a secret.
    #[derive(Default)]
    pub enum Delivery {
        /// Its bytes, for an environment variable.
        #[default]
        Env = "env",
        /// A file: a sealed memfd, read through `/proc/self/fd/N`.
        File = "file",
        /// Both.
        Both = "both",
    }
}

impl Delivery {
    /// True if the bytes are sent.
    pub fn as_bytes(self) -> bool {
        self != Self::File
    }

    /// True if a file is sent.
    pub fn as_file(self) -> bool {
        self != Self::Env
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

text_enum! {
    /// Why a request was refused, so that the client can exit with a code
    /// a script can tell apart.
    #[derive(Default)]
    pub enum ErrorKind {
        /// The policy or the caller's situation forbids it.
        #[default]
        Refused = "refused",
        /// The caller has no secret of that name.
        NoSuchSecret = "no_such_secret",
        /// Only root may ask this.
        PermissionDenied = "permission_denied",
    }
}

impl ErrorKind {
    /// Reads a kind, taking one this version does not know as `Refused`.
    fn or_refused<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(serde_json::from_value(serde_json::Value::String(text)).unwrap_or_default())
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame announces more bytes than allowed.
    #[error("message of {len} bytes is larger than the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header is not valid JSON for this message type.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// A message as bytes on the wire: length prefix and JSON header.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these plain types cannot fail: no maps with non-string keys,
    // no custom Serialize impls that error.
    let json = serde_json::to_vec(message).unwrap_or_default();
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(&json);
    frame
}

/// The header length a prefix announces, if it is within [`MAX_HEADER`].
pub fn header_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_HEADER {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_HEADER,
        });
    }
    Ok(len)
}

/// Parses a header.
pub fn decode<T: DeserializeOwned>(header: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(header)?)
}

/// Checks a `put`'s announced secret length.
pub fn check_secret_len(len: usize) -> Result<usize, FrameError> {
    if len > MAX_SECRET {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_SECRET,
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> SecretName {
        raw.parse().unwrap()
    }

    #[test]
    fn requests_round_trip() {
        let request = Request::Put {
            name: name("gh-token"),
            bind: Pid::new(42),
            ttl_secs: Some(Ttl::try_from(90).unwrap()),
            len: 3,
            replace: true,
        };
        let frame = encode(&request);
        let len = header_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode::<Request>(&frame[4..]).unwrap(), request);
    }

    #[test]
    fn an_error_of_an_unknown_or_missing_kind_reads_as_refused() {
        for (header, kind) in [
            (
                r#"{"reply":"error","message":"m","kind":"from_the_future"}"#,
                ErrorKind::Refused,
            ),
            (r#"{"reply":"error","message":"m"}"#, ErrorKind::Refused),
            (
                r#"{"reply":"error","message":"m","kind":"no_such_secret"}"#,
                ErrorKind::NoSuchSecret,
            ),
        ] {
            let decoded: Response = decode(header.as_bytes()).unwrap();
            let expected = Response::Error {
                message: "m".to_owned(),
                kind,
            };
            assert_eq!(decoded, expected, "{header}");
        }
    }

    #[test]
    fn bad_names_are_refused_at_parse() {
        for bad in ["", "a b", "../etc", "x\0", &"n".repeat(129)] {
            assert!(bad.parse::<SecretName>().is_err(), "{bad:?}");
        }
        let json = br#"{"op":"get","name":"../x"}"#;
        assert!(decode::<Request>(json).is_err());
    }

    #[test]
    fn out_of_range_fields_are_refused_at_parse() {
        let put = |fields: &str| {
            decode::<Request>(format!(r#"{{"op":"put","name":"t",{fields},"len":1}}"#).as_bytes())
        };
        assert!(put(r#""bind":null,"ttl_secs":31622400"#).is_ok());
        for bad in [
            r#""bind":null,"ttl_secs":18446744073709551615"#,
            r#""bind":null,"ttl_secs":0"#,
            r#""bind":0,"ttl_secs":null"#,
            r#""bind":-7,"ttl_secs":null"#,
        ] {
            assert!(put(bad).is_err(), "{bad}");
        }
        assert!(Ttl::new(Duration::from_secs(u64::MAX)).is_err());
        assert_eq!(u64::from(Ttl::new(Duration::from_millis(1500)).unwrap()), 2);
    }

    #[test]
    fn exec_names_are_bounded_and_distinct() {
        let exec = |names: Vec<String>| {
            let json = serde_json::json!({ "op": "exec", "names": names });
            decode::<Request>(json.to_string().as_bytes())
        };
        assert!(exec(vec!["a".into(), "b".into()]).is_ok());
        assert!(exec(vec!["a".into(), "a".into()]).is_err(), "twice");
        assert!(exec(Vec::new()).is_err(), "none");
        let many = (0..=MAX_EXEC_NAMES).map(|n| format!("n{n}")).collect();
        assert!(exec(many).is_err(), "too many");
    }

    #[test]
    fn unknown_ops_and_fields_are_malformed() {
        assert!(decode::<Request>(br#"{"op":"shutdown"}"#).is_err());
        assert!(decode::<Request>(br#"{"op":"list","extra":1}"#).is_err());
        assert!(decode::<Request>(b"\xff\xfe garbage").is_err());
    }

    #[test]
    fn oversized_frames_and_secrets_are_refused() {
        assert!(header_len((16u32 << 20).to_le_bytes()).is_err());
        assert!(check_secret_len(MAX_SECRET + 1).is_err());
        assert_eq!(check_secret_len(MAX_SECRET).unwrap(), MAX_SECRET);
    }
}
