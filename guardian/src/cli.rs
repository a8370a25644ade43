//! The command line: `guard` runs the guardian, every other subcommand is a
//! client that talks to it over the socket.

#![forbid(unsafe_code)]

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::protocol::{SecretName, Ttl};

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/ningen-shikkaku/guardian.sock";
/// Default audit log path.
pub const DEFAULT_AUDIT: &str = "/var/log/ningen-shikkaku/audit.jsonl";
/// Default configuration file (optional when at this path).
pub const DEFAULT_CONFIG: &str = "/etc/ningen-shikkaku/config.toml";

/// How to start, for `-h`.
const AFTER_HELP: &str = "\
Start the guardian as root (systemctl start ningen-shikkaku, or ningen-shikkaku guard
in a terminal of its own), then, in your shell:
  printf %s \"$TOKEN\" | ningen-shikkaku put gh-token
  ningen-shikkaku exec --env GH_TOKEN=gh-token -- gh repo list
The exit codes are listed by --help.";

/// How to start and the exit codes, for `--help` and the man page.
pub const AFTER_LONG_HELP: &str = "\
Start the guardian as root (systemctl start ningen-shikkaku, or ningen-shikkaku guard
in a terminal of its own), then, in your shell:
  printf %s \"$TOKEN\" | ningen-shikkaku put gh-token
  ningen-shikkaku exec --env GH_TOKEN=gh-token -- gh repo list

Exit status:
  0    success
  1    any other failure (I/O, a broken answer)
  2    usage: a bad option or argument
  3    the guardian is not reachable (not running, or no socket there)
  4    permission denied (the socket, or a root-only command)
  5    refused by the guardian (its policy, or the caller's session)
  6    no such secret
  7    doctor: the guardian is not running in its strongest mode (see its report)
  126  exec: the command cannot be run (not executable)
  127  exec: the command is not found
  exec otherwise exits with the command's own status: it becomes the command.";

/// A dead-man's switch for secrets: each secret lives in locked memory while
/// its session leader lives, and is wiped (and its holders killed) when it dies.
#[derive(Debug, Parser)]
#[command(
    name = "ningen-shikkaku",
    version,
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP,
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the guardian (as root, in the foreground).
    #[command(after_help = "Examples:\n  \
        ningen-shikkaku guard\n  \
        ningen-shikkaku guard --socket /run/ns-test.sock --audit /var/log/ns-test.jsonl\n\n\
        RUST_LOG=debug shows the eBPF programs' own diagnostics. Under systemd it \
        signals readiness once the socket listens (Type=notify).")]
    Guard(GuardArgs),
    /// Store a secret read from standard input, bound to a session leader.
    #[command(after_help = "Examples:\n  \
        printf %s \"$TOKEN\" | ningen-shikkaku put gh-token     # bound to this shell's session\n  \
        ningen-shikkaku put db-pass --ttl 8h                  # prompts, without echo\n  \
        ningen-shikkaku put gh-token --bind $$                # bound to this shell itself\n  \
        printf %s \"$NEW\" | ningen-shikkaku put gh-token --replace")]
    Put(PutArgs),
    /// Write a secret's bytes to standard output.
    #[command(after_help = "Example:\n  \
        ningen-shikkaku get gh-token | gh auth login --with-token")]
    Get(GetArgs),
    /// Run a command with secrets in its environment; it and its descendants
    /// are killed when a secret is wiped.
    #[command(after_help = "Examples:\n  \
        ningen-shikkaku exec --env GH_TOKEN=gh-token -- gh repo list\n  \
        ningen-shikkaku exec --env PGPASSWORD=db-pass --env TOKEN=gh-token -- ./deploy.sh\n  \
        ningen-shikkaku exec --file POSTGRES_PASSWORD_FILE=db-pass -- docker-entrypoint.sh postgres\n\n\
        Prefer --file where the program can read a file: an environment is inherited by every \
        child and shows in debug output and crash reports.\n\n\
        Exit status: the command's own; 127 if it is not found, 126 if it cannot be run.")]
    Exec(ExecArgs),
    /// List your secrets (never their values).
    #[command(after_help = "Examples:\n  \
        ningen-shikkaku list\n  \
        ningen-shikkaku list --json | jq -r '.[].name'\n  \
        sudo ningen-shikkaku list --all                        # every user's (root)")]
    List(ListArgs),
    /// Wipe a secret now and kill its holders.
    #[command(after_help = "Example:\n  \
        ningen-shikkaku revoke gh-token")]
    Revoke(RevokeArgs),
    /// The panic button: wipe every secret of yours now (root: everyone's).
    #[command(after_help = "Example:\n  \
        ningen-shikkaku wipe --all")]
    Wipe(WipeArgs),
    /// Show the guardian's state and which protections are active.
    #[command(after_help = "Examples:\n  \
        ningen-shikkaku status\n  \
        ningen-shikkaku status --json | jq .watch_mode")]
    Status(StatusArgs),
    /// Say which protections this host gives, and how to get the strongest
    /// (any user).
    #[command(after_help = "Examples:\n  \
        ningen-shikkaku doctor\n  \
        ningen-shikkaku doctor --json | jq -r '.checks[] | select(.verdict != \"ok\") | .name'\n\n\
        One line per check: ok, weaker or missing, what was found, and the fix where there is \
        one. Exit status: 0 when the guardian runs in its strongest mode (tamper protection \
        bpf-lsm+tracepoints), 7 when it does not (or is not running), 1 on any other failure.")]
    Doctor(DoctorArgs),
    /// Read the audit log (root only).
    #[command(
        subcommand,
        after_help = "Examples:\n  \
        sudo ningen-shikkaku audit verify\n  \
        sudo ningen-shikkaku audit tail -f"
    )]
    Audit(AuditCommand),
    /// Write shell completions or man pages.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
        ningen-shikkaku generate completions zsh > ~/.zfunc/_ningen-shikkaku\n  \
        ningen-shikkaku generate man ./man"
    )]
    Generate(GenerateCommand),
    /// Internal: the process the guardian starts to kill every holder if it
    /// dies. It refuses to run unless a guardian started it.
    #[command(hide = true)]
    Supervise(SuperviseArgs),
}

/// `generate ...`.
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Shell completions, on standard output.
    #[command(after_help = "Examples:\n  \
        ningen-shikkaku generate completions bash > /etc/bash_completion.d/ningen-shikkaku\n  \
        ningen-shikkaku generate completions fish > ~/.config/fish/completions/ningen-shikkaku.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Man pages (section 1), one for the command and one per subcommand.
    #[command(after_help = "Example:\n  \
        ningen-shikkaku generate man /usr/local/share/man/man1")]
    Man {
        /// The directory to write them to (created if missing).
        dir: PathBuf,
    },
}

/// `--quiet`, for the commands that confirm what they did.
#[derive(Debug, Args)]
pub struct QuietArg {
    /// Print nothing on success (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub quiet: QuietArg,
}

/// `audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain (rotated files included) and name the first bad record.
    #[command(after_help = "Example:\n  \
        sudo ningen-shikkaku audit verify")]
    Verify {
        /// The log (its rotated `.N` files are read too).
        #[arg(long, default_value = DEFAULT_AUDIT)]
        log: PathBuf,
    },
    /// Show records, oldest first.
    #[command(after_help = "Examples:\n  \
        sudo ningen-shikkaku audit tail -n 20\n  \
        sudo ningen-shikkaku audit tail -f --kind tamper")]
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
    /// Bind to this process instead of the caller's session leader (your
    /// shell: --bind $$).
    #[arg(
        long,
        value_name = "PID",
        conflicts_with = "replace",
        value_parser = clap::value_parser!(i32).range(1..)
    )]
    pub bind: Option<i32>,
    /// Wipe the secret after this long even if the leader lives (e.g. 90s, 15m, 8h;
    /// 1s to 366 days).
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_ttl,
        allow_hyphen_values = true,
        conflicts_with = "replace"
    )]
    pub ttl: Option<Ttl>,
    /// Give an existing secret a new value, under its binding and TTL; the
    /// processes holding the old value are killed (so it is refused from
    /// one of them).
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub quiet: QuietArg,
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
    /// Give secret NAME as a file: VAR holds its path, /proc/self/fd/N, which
    /// the command and its descendants can read; the bytes are in no
    /// environment and on no disk (repeatable; for programs that read
    /// *_FILE variables).
    #[arg(long = "file", value_name = "VAR=NAME", value_parser = parse_env_binding)]
    pub files: Vec<(String, SecretName)>,
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
    /// Print JSON instead of a table (times as RFC 3339, holders' pids).
    #[arg(long)]
    pub json: bool,
    /// Every user's secrets, with their uids (root only).
    #[arg(long)]
    pub all: bool,
}

/// `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// The secret's name.
    pub name: SecretName,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub quiet: QuietArg,
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

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A TTL as people write it, checked against its bounds here so that a
/// bad one is a usage error.
fn parse_ttl(raw: &str) -> Result<Ttl, String> {
    if raw.starts_with('-') {
        return Err("a TTL cannot be negative".to_owned());
    }
    let duration = humantime::parse_duration(raw).map_err(|err| err.to_string())?;
    Ttl::new(duration)
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
    use std::time::Duration;

    use clap::CommandFactory;

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
        assert_eq!(args.ttl.map(Ttl::duration), Some(Duration::from_secs(900)));
    }

    #[test]
    fn negative_and_out_of_range_ttls_are_usage_errors() {
        for ttl in ["-5m", "0s", "400days", "soon"] {
            let err = Cli::try_parse_from(["ns", "put", "x", "--ttl", ttl]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{ttl}");
        }
        let err = Cli::try_parse_from(["ns", "put", "x", "--ttl", "-5m"]).unwrap_err();
        assert!(err.to_string().contains("cannot be negative"), "{err}");
    }

    #[test]
    fn replace_keeps_the_binding_and_ttl() {
        for extra in [["--bind", "1"], ["--ttl", "5m"]] {
            let mut argv = vec!["ns", "put", "x", "--replace"];
            argv.extend(extra);
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        }
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_visible_subcommand_shows_an_example() {
        fn check(command: &clap::Command, path: &str) {
            let visible = |sub: &&clap::Command| !sub.is_hide_set() && sub.get_name() != "help";
            for sub in command.get_subcommands().filter(visible) {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(
                    help.contains("ningen-shikkaku "),
                    "no example in {path} --help"
                );
                check(sub, &path);
            }
        }
        let mut cli = Cli::command();
        cli.build();
        check(&cli, "ningen-shikkaku");
    }
}
