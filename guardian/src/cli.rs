//! The command line: `guard` runs the guardian, every other subcommand is a
//! client that talks to it over the socket.

#![forbid(unsafe_code)]

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::protocol::SecretName;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/ningen-shikkaku/guardian.sock";
/// Default audit log path.
pub const DEFAULT_AUDIT: &str = "/var/log/ningen-shikkaku/audit.jsonl";
/// Default configuration file (optional when at this path).
pub const DEFAULT_CONFIG: &str = "/etc/ningen-shikkaku/config.toml";

/// A dead-man's switch for secrets: each secret lives in locked memory while
/// its session leader lives, and is wiped (and its holders killed) when it dies.
#[derive(Debug, Parser)]
#[command(name = "ningen-shikkaku", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the guardian (as root, in the foreground).
    Guard(GuardArgs),
    /// Store a secret read from standard input, bound to a session leader.
    Put(PutArgs),
    /// Write a secret's bytes to standard output.
    Get(GetArgs),
    /// Run a command with secrets in its environment; it and its descendants
    /// are killed when a secret is wiped.
    Exec(ExecArgs),
    /// List your secrets (never their values).
    List(ListArgs),
    /// Wipe a secret now and kill its holders.
    Revoke(RevokeArgs),
    /// The panic button: wipe every secret of yours now (root: everyone's).
    Wipe(WipeArgs),
    /// Show the guardian's state and which protections are active.
    Status(StatusArgs),
    /// Read the audit log (root only).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Internal: the process the guardian starts to kill every holder if it dies.
    #[command(hide = true)]
    Supervise(SuperviseArgs),
}

/// The socket option every subcommand shares.
#[derive(Debug, Args)]
pub struct SocketArg {
    /// The guardian's socket.
    #[arg(long, env = "NINGEN_SHIKKAKU_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `guard`.
#[derive(Debug, Args)]
pub struct GuardArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// Where to append the audit log.
    #[arg(long, default_value = DEFAULT_AUDIT)]
    pub audit: PathBuf,
    /// Policy file (optional at the default path, required when given).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Do not load the eBPF programs: run on the pidfd fallback (benchmarks
    /// compare the two; also a way out on a kernel where the programs misbehave).
    #[arg(long)]
    pub no_ebpf: bool,
}

/// `wipe`.
#[derive(Debug, Args)]
pub struct WipeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// Every secret (required: there is no partial wipe).
    #[arg(long, required = true)]
    pub all: bool,
}

/// `audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain (rotated files included) and name the first bad record.
    Verify {
        /// The log (its rotated `.N` files are read too).
        #[arg(long, default_value = DEFAULT_AUDIT)]
        log: PathBuf,
    },
    /// Show records, oldest first.
    Tail {
        /// Keep printing new records as they are written.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only records of this kind (put, get, exec, list, revoke, wipe_all,
        /// status, trigger, tamper, malformed).
        #[arg(long)]
        kind: Option<String>,
        /// Only records of requests by this uid.
        #[arg(long)]
        uid: Option<u32>,
        /// Print the JSON records as written.
        #[arg(long)]
        json: bool,
        /// Only the last N matching records (then, with -f, new ones).
        #[arg(short = 'n', long = "lines", value_name = "N")]
        last: Option<usize>,
        /// The log.
        #[arg(long, default_value = DEFAULT_AUDIT)]
        log: PathBuf,
    },
}

/// `supervise`.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The guardian's cgroup directory.
    #[arg(long)]
    pub cgroup: PathBuf,
}

/// `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// The secret's name (A-Z a-z 0-9 . _ -).
    pub name: SecretName,
    /// Bind to this process instead of the caller's session leader.
    #[arg(long, value_name = "PID")]
    pub bind: Option<i32>,
    /// Wipe the secret after this long even if the leader lives (e.g. 90s, 15m, 8h).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// The secret's name.
    pub name: SecretName,
}

/// `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// Put secret NAME in environment variable VAR (repeatable).
    #[arg(long = "env", value_name = "VAR=NAME", value_parser = parse_env_binding)]
    pub env: Vec<(String, SecretName)>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// The secret's name.
    pub name: SecretName,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_env_binding(raw: &str) -> Result<(String, SecretName), String> {
    let (var, name) = raw.split_once('=').ok_or("expected VAR=NAME")?;
    let valid_var = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_var {
        return Err(format!("invalid environment variable name {var:?}"));
    }
    Ok((var.to_owned(), name.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_bindings_are_parsed_and_checked() {
        assert_eq!(
            parse_env_binding("GH_TOKEN=gh-token").unwrap().0,
            "GH_TOKEN"
        );
        assert!(parse_env_binding("GH_TOKEN").is_err());
        assert!(parse_env_binding("=x").is_err());
        assert!(parse_env_binding("1X=x").is_err());
        assert!(parse_env_binding("X=bad name").is_err());
    }

    #[test]
    fn exec_takes_the_command_after_the_separator() {
        let cli = Cli::try_parse_from(["ns", "exec", "--env", "A=a", "--", "env", "-0"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.command, ["env", "-0"]);
        assert_eq!(args.env.len(), 1);
    }

    #[test]
    fn ttl_accepts_human_durations() {
        let cli = Cli::try_parse_from(["ns", "put", "x", "--ttl", "15m"]).unwrap();
        let Command::Put(args) = cli.command else {
            panic!("not put")
        };
        assert_eq!(args.ttl, Some(Duration::from_secs(900)));
    }
}
