//! A real guardian for one test: started as root on its own paths, its
//! status, audit records and log read back, and its supervisor found.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{bin, proc_status_field, processes, scratch_dir, stderr, wait_until};

/// A guardian started for one test, stopped (SIGTERM) when dropped.
pub struct Guardian {
    child: Child,
    /// The test's scratch directory.
    pub dir: PathBuf,
    /// The guardian's socket.
    pub socket: PathBuf,
    /// The guardian's audit log.
    pub audit: PathBuf,
}

impl Guardian {
    /// Starts a guardian and waits until it answers `status`.
    pub fn start(tag: &str) -> Self {
        Self::start_with_config(tag, "")
    }

    /// Starts a guardian with `config` as its policy file.
    pub fn start_with_config(tag: &str, config: &str) -> Self {
        let dir = scratch_dir(tag);
        let audit = dir.join("audit/audit.jsonl");
        Self::start_in(dir, audit, config, &[], Launch::Plain)
    }

    /// Starts a guardian that writes its audit log at `audit`.
    pub fn start_with_audit(tag: &str, audit: &Path) -> Self {
        Self::start_in(scratch_dir(tag), audit.to_owned(), "", &[], Launch::Plain)
    }

    /// Starts a guardian with `--no-ebpf`: its pidfd and /proc fallback.
    pub fn start_without_ebpf(tag: &str) -> Self {
        let dir = scratch_dir(tag);
        let audit = dir.join("audit/audit.jsonl");
        Self::start_in(dir, audit, "", &["--no-ebpf"], Launch::Plain)
    }

    /// Starts a guardian whose descriptor limit is `limit` (soft and hard),
    /// as `ulimit -n` in a shell leaves it.
    pub fn start_with_open_files(tag: &str, limit: u64) -> Self {
        let dir = scratch_dir(tag);
        let audit = dir.join("audit/audit.jsonl");
        Self::start_in(dir, audit, "", &[], Launch::OpenFiles(limit))
    }

    /// Starts a guardian logging at debug level (RUST_LOG=debug), which also
    /// turns on its eBPF programs' own log.
    pub fn start_at_debug_level(tag: &str) -> Self {
        let dir = scratch_dir(tag);
        let audit = dir.join("audit/audit.jsonl");
        Self::start_in(dir, audit, "", &[], Launch::DebugLog)
    }

    /// Starts a guardian as systemd would: NOTIFY_SOCKET names `notify`
    /// (where it must say READY=1) and JOURNAL_STREAM names its standard
    /// error (its log) as the journal's.
    pub fn start_as_systemd_would(tag: &str, notify: &Path) -> Self {
        let dir = scratch_dir(tag);
        let audit = dir.join("audit/audit.jsonl");
        Self::start_in(dir, audit, "", &[], Launch::Systemd(notify.to_owned()))
    }

    /// Starts a guardian whose D-Bus system bus is at `address` (the fake
    /// logind's), with `config` as its policy.
    pub fn start_on_bus(tag: &str, address: &str, config: &str) -> Self {
        let dir = scratch_dir(tag);
        let audit = dir.join("audit/audit.jsonl");
        Self::start_in(
            dir,
            audit,
            config,
            &[],
            Launch::SystemBus(address.to_owned()),
        )
    }

    fn start_in(
        dir: PathBuf,
        audit: PathBuf,
        config: &str,
        extra: &[&str],
        launch: Launch,
    ) -> Self {
        let socket = dir.join("guardian.sock");
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).expect("write config");
        let log = fs::File::create(dir.join("guardian.log")).expect("guardian log");
        let mut command = Command::new(bin());
        if let Launch::DebugLog = launch {
            command.env("RUST_LOG", "debug");
        }
        if let Launch::SystemBus(address) = &launch {
            command.env("DBUS_SYSTEM_BUS_ADDRESS", address);
        }
        if let Launch::Systemd(notify) = &launch {
            use std::os::linux::fs::MetadataExt;
            let stream = log.metadata().expect("stat the log");
            command.env("NOTIFY_SOCKET", notify).env(
                "JOURNAL_STREAM",
                format!("{}:{}", stream.st_dev(), stream.st_ino()),
            );
        }
        if let Launch::OpenFiles(limit) = launch {
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    let nofile = nix::sys::resource::Resource::RLIMIT_NOFILE;
                    nix::sys::resource::setrlimit(nofile, limit, limit)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = command
            .arg("guard")
            .arg("--socket")
            .arg(&socket)
            .arg("--audit")
            .arg(&audit)
            .arg("--config")
            .arg(&config_path)
            .args(extra)
            .stderr(log)
            .spawn()
            .expect("start guardian");
        let guardian = Self {
            child,
            dir,
            socket,
            audit,
        };
        let up = wait_until(Duration::from_secs(10), || {
            guardian.cli(["status"]).status.success()
        });
        assert!(up, "guardian did not come up: {}", guardian.log());
        guardian
    }

    /// The CLI, pointed at this guardian.
    pub fn command(&self) -> Command {
        let mut command = Command::new(bin());
        command.env("NINGEN_SHIKKAKU_SOCKET", &self.socket);
        command
    }

    /// The CLI as the unprivileged user `nobody` (uid 65534), pointed at this guardian.
    pub fn command_as_nobody(&self) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .env("NINGEN_SHIKKAKU_SOCKET", &self.socket);
        command
    }

    /// Runs the CLI with `args` from the test process (outside any test session).
    pub fn cli<const N: usize>(&self, args: [&str; N]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cli")
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> Value {
        let output = self.cli(["status", "--json"]);
        assert!(
            output.status.success(),
            "status failed: {}",
            stderr(&output)
        );
        serde_json::from_slice(&output.stdout).expect("status json")
    }

    /// Every audit record so far, rotated files (`audit.jsonl.N` ... `.1`) first.
    pub fn audit_records(&self) -> Vec<Value> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.audit.display()));
        let rotated = (1..).take_while(|&n| numbered(n).exists()).count();
        let mut files: Vec<PathBuf> = (1..=rotated).rev().map(numbered).collect();
        files.push(self.audit.clone());
        files
            .iter()
            .flat_map(|file| {
                // A line is a record once its newline is written: a read that
                // races the guardian's write may end in part of the next one.
                fs::read_to_string(file)
                    .unwrap_or_default()
                    .split_inclusive('\n')
                    .filter(|line| line.ends_with('\n'))
                    .map(|line| line.trim_end().to_owned())
                    .collect::<Vec<_>>()
            })
            .map(|line| serde_json::from_str(&line).expect("audit line is JSON"))
            .collect()
    }

    /// The records of the live audit file as written, without the zeroed
    /// room the guardian keeps after them.
    pub fn audit_text(&self) -> String {
        let mut bytes = fs::read(&self.audit).unwrap_or_default();
        bytes.truncate(bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()));
        String::from_utf8(bytes).expect("audit records are UTF-8")
    }

    /// Bytes of records in the live audit file (its length counts the room).
    pub fn audit_len(&self) -> u64 {
        self.audit_text().len() as u64
    }

    /// Audit records of `action`.
    pub fn audit_of(&self, action: &str) -> Vec<Value> {
        self.audit_records()
            .into_iter()
            .filter(|r| r["action"] == action)
            .collect()
    }

    /// The guardian's stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("guardian.log")).unwrap_or_default()
    }

    /// The guardian's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// True while the guardian process runs.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Stops the guardian as systemd and Ctrl-C do (SIGTERM) and returns how
    /// it ended.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), Signal::SIGTERM);
        assert!(
            wait_until(Duration::from_secs(10), || !self.is_running()),
            "the guardian did not stop: {}",
            self.log()
        );
        self.exit_status().expect("stopped")
    }

    /// How the guardian ended, once it has (reaping it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // A reaped guardian's pid may already be another process's. No panic
        // here: this also runs while a failed test unwinds.
        if self.is_running() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), Signal::SIGTERM);
        }
        if !wait_until(Duration::from_secs(10), || !self.is_running()) {
            let _ = self.child.kill(); // a hung guardian must not hang the suite
        }
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// How a test guardian is started, beyond its arguments.
#[derive(Clone)]
enum Launch {
    Plain,
    /// With this descriptor limit, soft and hard.
    OpenFiles(u64),
    /// With RUST_LOG=debug.
    DebugLog,
    /// As systemd starts a `Type=notify` service: readiness to this
    /// socket, standard error named as the journal's stream.
    Systemd(PathBuf),
    /// On the D-Bus system bus at this address.
    SystemBus(String),
}

/// The guardian's supervisor: its child running `ningen-shikkaku supervise`.
pub fn supervisor_of(guardian: i32) -> i32 {
    processes()
        .find(|(pid, cmdline)| {
            let ppid = proc_status_field(*pid, "PPid");
            ppid == Some(guardian as u64) && cmdline.windows(9).any(|w| w == b"supervise")
        })
        .map(|(pid, _)| pid)
        .expect("the guardian has a supervisor")
}

/// Where a guardian started by [`Guardian::try_start_at`] keeps its socket,
/// audit log and policy file: a test plants what it attacks at one of them.
pub struct Paths {
    /// The socket.
    pub socket: PathBuf,
    /// The audit log.
    pub audit: PathBuf,
    /// The policy file, used as it is found.
    pub config: PathBuf,
}

impl Guardian {
    /// Starts `guard` at `paths`, logging to `dir/guardian.log`. Returns the
    /// guardian once it answers `status`, or its log if it exits first;
    /// `dir` is removed only with a guardian that came up.
    pub fn try_start_at(dir: &Path, paths: &Paths) -> Result<Self, String> {
        let log = fs::File::create(dir.join("guardian.log")).expect("guardian log");
        let mut child = Command::new(bin())
            .arg("guard")
            .arg("--socket")
            .arg(&paths.socket)
            .arg("--audit")
            .arg(&paths.audit)
            .arg("--config")
            .arg(&paths.config)
            .stderr(log)
            .spawn()
            .expect("start guardian");
        // This guardian answers, not one already listening at the path.
        let pid = child.id();
        let status = || {
            let output = Command::new(bin())
                .args(["status", "--json"])
                .env("NINGEN_SHIKKAKU_SOCKET", &paths.socket)
                .output();
            output.is_ok_and(|output| {
                serde_json::from_slice::<Value>(&output.stdout)
                    .is_ok_and(|status| status["pid"] == pid)
            })
        };
        let settled = wait_until(Duration::from_secs(10), || {
            child.try_wait().ok().flatten().is_some() || status()
        });
        let log = || fs::read_to_string(dir.join("guardian.log")).unwrap_or_default();
        if !settled {
            let _ = child.kill();
            let _ = child.wait();
            panic!("guardian neither came up nor exited: {}", log());
        }
        if child.try_wait().ok().flatten().is_some() {
            return Err(log());
        }
        Ok(Self {
            child,
            dir: dir.to_owned(),
            socket: paths.socket.clone(),
            audit: paths.audit.clone(),
        })
    }
}
