//! Policy, from `/etc/ningen-shikkaku/config.toml` (or `guard --config PATH`).
//!
//! Two phases: [`RawConfig`] only parses (unknown keys are errors, with the
//! line named by the TOML parser), then [`Config::resolve`] checks values and
//! turns durations into `Duration`s, naming the line of a bad value. The file
//! is read only if no user but root could have written it, nor any directory
//! above it ([`crate::os::trusted_path`]).
//!
//! Every key, with its default and range, is in `packaging/config.toml`,
//! the commented example `cargo xtask install` puts in place.

#![forbid(unsafe_code)]

use std::{io, path::Path, time::Duration};

use serde::Deserialize;

use crate::{
    os::trusted_path::{self, PathError},
    protocol::{MAX_SECRET, MAX_TTL},
};

/// What to do when someone ptraces or process_vm_reads a holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperResponse {
    /// Wipe the holder's secrets and kill its grant (fail closed). The default.
    Wipe,
    /// Only audit (the attacker is killed either way).
    Audit,
}

/// What a sign that a session is no longer watched does (`on_lock`,
/// `on_suspend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Wipe the secrets it concerns and kill their holders. The default.
    Wipe,
    /// Let the secrets live.
    Ignore,
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    tamper_response: Option<TamperResponse>,
    default_ttl: Option<String>,
    max_ttl: Option<String>,
    max_secret_bytes: Option<usize>,
    max_secrets_per_uid: Option<usize>,
    max_locked_bytes_per_uid: Option<usize>,
    audit_max_bytes: Option<u64>,
    audit_keep_files: Option<usize>,
    on_lock: Option<Response>,
    on_suspend: Option<Response>,
    on_environ_read: Option<TamperResponse>,
    watch_32_bit_syscalls: Option<bool>,
}

/// The policy in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Response to a tamper attempt on a holder.
    pub tamper_response: TamperResponse,
    /// TTL given to secrets stored without one.
    pub default_ttl: Option<Duration>,
    /// Longest TTL allowed.
    pub max_ttl: Option<Duration>,
    /// Largest secret accepted.
    pub max_secret_bytes: usize,
    /// Most secrets one uid may hold.
    pub max_secrets_per_uid: usize,
    /// Most bytes one uid may have locked in the guardian: its secrets and
    /// the copies in replies on their way to it.
    pub max_locked_bytes_per_uid: usize,
    /// Size past which the audit log is rotated.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept.
    pub audit_keep_files: usize,
    /// What logind locking a session does to the secrets bound in it.
    pub on_lock: Response,
    /// What the machine going to sleep does to every secret.
    pub on_suspend: Response,
    /// What an open of an environment that holds a value does, stopped
    /// before its first byte: every `ps` on Debian 12 makes one at an `exec
    /// --env` holder, so by default it is audited and wipes nothing.
    pub on_environ_read: TamperResponse,
    /// Where BPF LSM does not run: whether the system-call programs watch
    /// the 32-bit and x32 tables too, which only a program run on every
    /// system call of the machine can. Off by default: that program costs
    /// syscall-heavy work a quarter of its speed, and what it alone sees
    /// is named in `status`.
    pub watch_32_bit_syscalls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tamper_response: TamperResponse::Wipe,
            default_ttl: None,
            max_ttl: None,
            max_secret_bytes: MAX_SECRET,
            max_secrets_per_uid: 256,
            max_locked_bytes_per_uid: 16 << 20,
            audit_max_bytes: 64 << 20,
            audit_keep_files: 16,
            on_lock: Response::Wipe,
            on_suspend: Response::Wipe,
            on_environ_read: TamperResponse::Audit,
            watch_32_bit_syscalls: false,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The file, or a directory above it, is a link or could be changed by
    /// a user other than root.
    #[error("refusing the policy file: {0}")]
    Untrusted(#[from] PathError),
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which names the line.
        message: String,
    },
    /// A value of the right type but out of range.
    #[error("{path} line {line}: {key}: {message}")]
    Value {
        /// The file.
        path: String,
        /// Line of the key.
        line: usize,
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads `path`. A missing file is the defaults only when `required` is false
    /// (the default path); a path the user named must exist.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let file = match trusted_path::open_read_only(path) {
            Ok(file) => file,
            Err(PathError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && !required =>
            {
                return Ok(Self::default());
            }
            Err(PathError::Io { path, source }) => {
                let path = path.display().to_string();
                return Err(ConfigError::Read { path, source });
            }
            Err(err) => return Err(err.into()),
        };
        let text = io::read_to_string(file).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Self::parse(&text, &display)
    }

    /// Parses and resolves the text of a config file named `path`.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            message: err.to_string().trim().replace('\n', " "),
        })?;
        Self::resolve(raw, text, path)
    }

    fn resolve(raw: RawConfig, text: &str, path: &str) -> Result<Self, ConfigError> {
        let bad = |key: &'static str, message: String| ConfigError::Value {
            path: path.to_owned(),
            line: line_of(text, key),
            key,
            message,
        };
        let duration = |key: &'static str, value: Option<String>| {
            value
                .map(|value| {
                    humantime::parse_duration(&value)
                        .map_err(|err| bad(key, format!("{value:?} is not a duration ({err})")))
                })
                .transpose()
        };
        let defaults = Self::default();
        let config = Self {
            tamper_response: raw.tamper_response.unwrap_or(defaults.tamper_response),
            default_ttl: duration("default_ttl", raw.default_ttl)?,
            max_ttl: duration("max_ttl", raw.max_ttl)?,
            max_secret_bytes: raw.max_secret_bytes.unwrap_or(defaults.max_secret_bytes),
            max_secrets_per_uid: raw
                .max_secrets_per_uid
                .unwrap_or(defaults.max_secrets_per_uid),
            max_locked_bytes_per_uid: raw
                .max_locked_bytes_per_uid
                .unwrap_or(defaults.max_locked_bytes_per_uid),
            audit_max_bytes: raw.audit_max_bytes.unwrap_or(defaults.audit_max_bytes),
            audit_keep_files: raw.audit_keep_files.unwrap_or(defaults.audit_keep_files),
            on_lock: raw.on_lock.unwrap_or(defaults.on_lock),
            on_environ_read: raw.on_environ_read.unwrap_or(defaults.on_environ_read),
            on_suspend: raw.on_suspend.unwrap_or(defaults.on_suspend),
            watch_32_bit_syscalls: raw
                .watch_32_bit_syscalls
                .unwrap_or(defaults.watch_32_bit_syscalls),
        };
        if config.max_secret_bytes == 0 || config.max_secret_bytes > MAX_SECRET {
            return Err(bad(
                "max_secret_bytes",
                format!("must be between 1 and {MAX_SECRET}"),
            ));
        }
        if config.audit_max_bytes < 4096 {
            return Err(bad("audit_max_bytes", "must be at least 4096".to_owned()));
        }
        if !(1..=10_000).contains(&config.audit_keep_files) {
            return Err(bad(
                "audit_keep_files",
                "must be between 1 and 10000".to_owned(),
            ));
        }
        // A secret of the largest size and its copy in a reply must fit.
        if config.max_locked_bytes_per_uid / 2 < config.max_secret_bytes {
            return Err(bad(
                "max_locked_bytes_per_uid",
                "must be at least twice max_secret_bytes".to_owned(),
            ));
        }
        for (key, ttl) in [
            ("default_ttl", config.default_ttl),
            ("max_ttl", config.max_ttl),
        ] {
            if ttl.is_some_and(|ttl| ttl.is_zero() || ttl > MAX_TTL) {
                let most = humantime::format_duration(MAX_TTL);
                return Err(bad(key, format!("must be between 1s and {most}")));
            }
        }
        if config.max_secrets_per_uid == 0 {
            return Err(bad("max_secrets_per_uid", "must be at least 1".to_owned()));
        }
        if let (Some(default), Some(max)) = (config.default_ttl, config.max_ttl)
            && default > max
        {
            return Err(bad("default_ttl", "is longer than max_ttl".to_owned()));
        }
        Ok(config)
    }

    /// The TTL a `put` gets: its own (checked against the maximum) or the default.
    /// Without `max_ttl`, the protocol's [`MAX_TTL`] is the maximum.
    pub fn ttl_for(&self, asked: Option<Duration>) -> Result<Option<Duration>, TtlTooLong> {
        let max = self.max_ttl.unwrap_or(MAX_TTL);
        match asked {
            Some(asked) if asked > max => Err(TtlTooLong { asked, max }),
            Some(asked) => Ok(Some(asked)),
            None => Ok(self.default_ttl),
        }
    }
}

/// A `put` asked for a longer TTL than the policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "TTL {} is longer than the maximum of {}",
    humantime::format_duration(*asked),
    humantime::format_duration(*max)
)]
pub struct TtlTooLong {
    /// The TTL asked for.
    pub asked: Duration,
    /// The policy's maximum.
    pub max: Duration,
}

/// 1-based line where `key` is assigned, or 0 if it cannot be found.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| line.trim_start().starts_with(key) && line.contains('='))
        .map_or(0, |index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The installed example, `packaging/config.toml`.
    const EXAMPLE: &str = include_str!("../../packaging/config.toml");

    #[test]
    fn the_installed_example_changes_nothing_and_shows_every_default() {
        assert_eq!(
            Config::parse(EXAMPLE, "example").unwrap(),
            Config::default()
        );
        // Uncommented, each line is a key at its default (max_ttl and
        // default_ttl, which default to none, show the protocol's maximum
        // and an example).
        let uncommented: String = EXAMPLE
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .filter(|line| line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        let all = Config::parse(&uncommented, "uncommented").unwrap();
        let expected = Config {
            default_ttl: Some(Duration::from_secs(8 * 3600)),
            max_ttl: Some(MAX_TTL),
            ..Config::default()
        };
        assert_eq!(all, expected);
        let keys = uncommented.lines().filter(|line| !line.is_empty()).count();
        assert_eq!(keys, 12, "one line per key of RawConfig");
    }

    #[test]
    fn a_full_file_resolves() {
        let text = "tamper_response = \"audit\"\ndefault_ttl = \"15m\"\nmax_ttl = \"8h\"\n\
                    max_secret_bytes = 4096\nmax_secrets_per_uid = 3\n\
                    watch_32_bit_syscalls = true\n";
        let config = Config::parse(text, "c.toml").unwrap();
        assert_eq!(config.tamper_response, TamperResponse::Audit);
        assert!(config.watch_32_bit_syscalls);
        assert_eq!(config.default_ttl, Some(Duration::from_secs(900)));
        assert_eq!(
            config.ttl_for(None).unwrap(),
            Some(Duration::from_secs(900))
        );
        assert!(config.ttl_for(Some(Duration::from_secs(9 * 3600))).is_err());
        assert_eq!(config.max_secrets_per_uid, 3);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err = Config::parse("max_ttl = \"1h\"\nshred_disk = true\n", "c.toml").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("line 2") && message.contains("shred_disk"),
            "{message}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let err = Config::parse("# policy\nmax_ttl = \"soon\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("line 2: max_ttl"), "{err}");
        let err = Config::parse("max_secret_bytes = 99999999\n", "c.toml").unwrap_err();
        assert!(
            err.to_string().contains("line 1: max_secret_bytes"),
            "{err}"
        );
        let err = Config::parse("tamper_response = \"explode\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        for keep in [0, 10_001] {
            let err = Config::parse(&format!("audit_keep_files = {keep}\n"), "c.toml").unwrap_err();
            assert!(
                err.to_string().contains("line 1: audit_keep_files"),
                "{err}"
            );
        }
        let kept = Config::parse("audit_keep_files = 3\n", "c.toml").unwrap();
        assert_eq!(kept.audit_keep_files, 3);
    }

    #[test]
    fn a_missing_default_file_means_defaults_but_a_named_one_must_exist() {
        let missing = Path::new("/nonexistent/ningen-shikkaku.toml");
        assert_eq!(Config::load(missing, false).unwrap(), Config::default());
        assert!(Config::load(missing, true).is_err());
    }
}
