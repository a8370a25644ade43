//! Helpers for the end-to-end tests: start a real guardian (as root, with its
//! eBPF programs), open shell sessions with their own session leader, and run
//! the `ningen-shikkaku` CLI inside or outside them as a user would.

use std::{
    fs,
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// The binary under test: `NINGEN_SHIKKAKU_BIN` (set by `cargo xtask test`)
/// or the release build.
pub fn bin() -> PathBuf {
    std::env::var_os("NINGEN_SHIKKAKU_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ningen-shikkaku"),
        PathBuf::from,
    )
}

/// A fresh directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ns-e2e-{}-{tag}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The state letter of `pid` in /proc/PID/stat (`R`, `S`, `T`, `Z`, ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|state| state != 'Z')
}

/// True if `pid` is stopped (state `T` or `t`).
pub fn is_stopped(pid: i32) -> bool {
    proc_state(pid).is_some_and(|state| state == 'T' || state == 't')
}

/// Sends `signal` to `pid`; the test fails if it cannot be sent.
pub fn send_signal(pid: i32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .unwrap_or_else(|err| panic!("cannot send {signal} to {pid}: {err}"));
}

/// True while `pid` sleeps in a read(2) of the pipe (or other file) that
/// `ours` is open on; from /proc/PID/syscall, whose first fields are the
/// syscall number and its first argument (the descriptor, in hex).
pub fn is_blocked_reading(pid: i32, ours: &impl std::os::fd::AsRawFd) -> bool {
    let target = |path: String| fs::read_link(path).ok();
    let syscall = fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let mut fields = syscall.split_whitespace();
    let reading = fields.next() == Some(&libc::SYS_read.to_string());
    let fd = fields
        .next()
        .and_then(|fd| i32::from_str_radix(fd.trim_start_matches("0x"), 16).ok());
    reading
        && proc_state(pid) == Some('S')
        && fd.is_some_and(|fd| {
            let theirs = target(format!("/proc/{pid}/fd/{fd}"));
            theirs.is_some() && theirs == target(format!("/proc/self/fd/{}", ours.as_raw_fd()))
        })
}

/// Bytes written to a pipe and not yet read from it (FIONREAD, which either
/// end of a pipe answers).
pub fn unread_in_pipe(pipe: &impl std::os::fd::AsRawFd) -> usize {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut unread) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    usize::try_from(unread).expect("FIONREAD is never negative")
}

/// Runs `command` with `input` on its standard input and its output captured.
pub fn output_with_input(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run command");
    // Dropping the handle after the write closes the pipe: the child sees EOF.
    let write = child.stdin.take().expect("piped stdin").write_all(input);
    let output = child.wait_with_output().expect("wait for command");
    write.expect("write standard input");
    output
}

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
#[derive(Clone, Copy)]
enum Launch {
    Plain,
    /// With this descriptor limit, soft and hard.
    OpenFiles(u64),
    /// With RUST_LOG=debug.
    DebugLog,
}

/// A shell that is its own session leader (started with setsid), fed commands
/// on its standard input, so commands run inside the session as a user's would.
pub struct Session {
    shell: Child,
    stdin: ChildStdin,
    dir: PathBuf,
    runs: usize,
}

impl Session {
    /// Starts `bash -s` in a new session, with `$NS` naming the CLI and its
    /// socket set to `guardian`'s.
    pub fn start(guardian: &Guardian) -> Self {
        Self::start_with(guardian, Command::new("bash"))
    }

    /// The same, as the unprivileged user `nobody` (uid 65534).
    pub fn start_as_nobody(guardian: &Guardian) -> Self {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"]);
        Self::start_with(guardian, command)
    }

    fn start_with(guardian: &Guardian, mut command: Command) -> Self {
        let dir = scratch_dir("session");
        let everyone = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        fs::set_permissions(&dir, everyone).expect("open the session dir to its user");
        command
            .arg("-s")
            .current_dir(&dir)
            .env("NINGEN_SHIKKAKU_SOCKET", &guardian.socket)
            .env("NS", bin())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        let mut shell = command.spawn().expect("start session shell");
        let stdin = shell.stdin.take().expect("piped stdin");
        Self {
            shell,
            stdin,
            dir,
            runs: 0,
        }
    }

    /// The session leader's pid.
    pub fn leader(&self) -> i32 {
        self.shell.id() as i32
    }

    /// The session's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `script` in the session and waits for it: (exit code, stdout, stderr).
    pub fn run(&mut self, script: &str) -> (i32, Vec<u8>, String) {
        self.runs += 1;
        let n = self.runs;
        let line = format!(
            "{{ {script}\n}} > out{n} 2> err{n}; echo $? > rc{n}.tmp; mv rc{n}.tmp rc{n}\n"
        );
        self.stdin
            .write_all(line.as_bytes())
            .expect("write to session");
        self.stdin.flush().expect("flush session");
        let rc_path = self.dir.join(format!("rc{n}"));
        assert!(
            wait_until(Duration::from_secs(20), || rc_path.exists()),
            "session command hung: {script}"
        );
        let rc = fs::read_to_string(&rc_path)
            .expect("rc")
            .trim()
            .parse()
            .expect("rc number");
        let out = fs::read(self.dir.join(format!("out{n}"))).unwrap_or_default();
        let err = fs::read_to_string(self.dir.join(format!("err{n}"))).unwrap_or_default();
        (rc, out, err)
    }

    /// Starts `script` in the background inside the session.
    pub fn spawn(&mut self, script: &str) {
        let line = format!("( {script}\n) > /dev/null 2>&1 &\n");
        self.stdin
            .write_all(line.as_bytes())
            .expect("write to session");
        self.stdin.flush().expect("flush session");
    }

    /// Sends `signal` to the session leader.
    pub fn signal_leader(&self, signal: Signal) {
        send_signal(self.leader(), signal);
    }

    /// Pids a holder script wrote to `file` (one per line).
    pub fn pids_in(&self, file: &str) -> Vec<i32> {
        fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A holder that escapes as hard as a shell can: it writes its pid to FILE,
/// forks a child that writes its pid and double-forks a grandchild that calls
/// setsid and writes its pid, and they all sleep. It also writes the secret it
/// received in `$SECRET_VAR` to FILE.secret.
pub fn escaping_holder(file: &str, secret_var: &str) -> String {
    format!(
        r#"bash -c 'printf %s "${secret_var}" > {file}.secret; echo $$ >> {file}; ( echo $BASHPID >> {file}; ( setsid bash -c "echo \$\$ >> {file}; exec sleep 1000" & ); exec sleep 1000 ) & exec sleep 1000'"#
    )
}

/// Runs the tamper helper (tests/helpers/attacker.py) as root or as `nobody`.
pub fn attack(mode: &str, target: i32, out: &Path, as_nobody: bool) -> Output {
    helper("attacker.py", as_nobody)
        .arg(mode)
        .arg(target.to_string())
        .arg(out)
        .output()
        .expect("run attacker")
}

/// Runs the read-path helper (tests/helpers/reader.py) in a session of its
/// own, as root or as `nobody`: `reader.py MODE TARGET OUT [EXTRA]`.
pub fn read_attack(mode: &str, target: i32, out: &Path, extra: &[&str], as_nobody: bool) -> Output {
    let mut command = helper("reader.py", as_nobody);
    command
        .arg(mode)
        .arg(target.to_string())
        .arg(out)
        .args(extra);
    // SAFETY: setsid is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    command.output().expect("run reader")
}

/// Runs the hostile client (tests/helpers/abuser.py) inside `session`, as
/// its user, with `args` after `MODE SOCKET` spliced in (`request '{json}' 0`),
/// and parses the one reply it prints. Inside the session, the guardian's
/// access rules do not stop it first.
pub fn abuser_in(session: &mut Session, args: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/abuser.py");
    let (mode, rest) = args.split_once(' ').unwrap_or((args, ""));
    let (_, out, err) = session.run(&format!(
        "/usr/bin/python3 {} {mode} \"$NINGEN_SHIKKAKU_SOCKET\" {rest}",
        script.display()
    ));
    let text = String::from_utf8_lossy(&out);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("no reply: {text} {err}"))
}

/// A python3 command running `tests/helpers/SCRIPT`, as root or as `nobody`.
fn helper(script: &str, as_nobody: bool) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("helpers")
        .join(script);
    let mut command = if as_nobody {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
        ]);
        command
    } else {
        Command::new("/usr/bin/python3")
    };
    command.arg(script);
    command
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

/// Stores a fresh printable marker (it travels in an environment variable)
/// as the secret `name` in the session, and returns it.
pub fn put_marker(session: &mut Session, name: &str) -> Vec<u8> {
    let marker: Vec<u8> = random_bytes(16)
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect();
    fs::write(session.dir().join(name), &marker).unwrap();
    let (rc, _, err) = session.run(&format!("$NS put {name} < {name}"));
    assert_eq!(rc, 0, "{err}");
    fs::remove_file(session.dir().join(name)).unwrap();
    marker
}

/// Starts `exec --env T=NAME -- sleep 1000` in the session and returns the
/// holder's pid once it runs `sleep`.
pub fn start_sleeping_holder(session: &mut Session, name: &str) -> i32 {
    let (rc, out, err) = session.run(&format!(
        "$NS exec --env T={name} -- sleep 1000 > /dev/null 2>&1 & echo $!"
    ));
    assert_eq!(rc, 0, "{err}");
    let pid: i32 = String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .expect("holder pid");
    let comm = || fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || comm().trim() == "sleep"),
        "holder did not start"
    );
    pid
}

/// Stderr of a finished command, for assertion messages.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every pid in /proc, with its command line (NUL-separated arguments).
pub fn processes() -> impl Iterator<Item = (i32, Vec<u8>)> {
    fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .map(|pid| {
            (
                pid,
                fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
        })
}

/// `len` random bytes from the kernel.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    let mut urandom = fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut urandom, &mut bytes).expect("read /dev/urandom");
    bytes
}

/// A mapping of a process where a memory scan found the needle.
#[derive(Debug)]
pub struct Hit {
    /// The mapping's line in /proc/PID/maps.
    pub mapping: String,
    /// Locked kB of the mapping, from /proc/PID/smaps.
    pub locked_kb: u64,
}

/// Reads every readable mapping of `pid` through /proc/PID/mem (as root) and
/// returns the mappings that contain `needle`. Pages that cannot be read
/// (memfd_secret pages among them) are skipped, which is the point.
pub fn find_in_memory(pid: i32, needle: &[u8]) -> Vec<Hit> {
    use std::os::unix::fs::FileExt;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let sizes = mappings(pid);
    let mem = fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    let mut hits = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let start = u64::from_str_radix(start, 16).expect("hex start");
        let end = u64::from_str_radix(end, 16).expect("hex end");
        let mut found = false;
        let mut carry: Vec<u8> = Vec::new();
        let mut at = start;
        while at < end && !found {
            let mut page = vec![0u8; 4096.min((end - at) as usize)];
            if mem.read_exact_at(&mut page, at).is_ok() {
                carry.extend_from_slice(&page);
                found = carry.windows(needle.len()).any(|window| window == needle);
                let keep = carry.len().saturating_sub(needle.len());
                carry.drain(..keep);
            } else {
                carry.clear();
            }
            at += page.len() as u64;
        }
        if found {
            hits.push(Hit {
                mapping: line.to_owned(),
                locked_kb: sizes
                    .iter()
                    .find(|mapping| mapping.range == range)
                    .map_or(0, |mapping| mapping.locked_kb),
            });
        }
    }
    hits
}

/// One mapping of a process, from /proc/PID/smaps.
#[derive(Debug)]
pub struct Mapping {
    /// Its address range, as in /proc/PID/maps (`start-end`, hex).
    pub range: String,
    /// Its path or pseudo-name (`[heap]`, `[stack]`); empty when anonymous.
    pub name: String,
    /// Resident kB.
    pub rss_kb: u64,
    /// Locked kB.
    pub locked_kb: u64,
}

/// Every mapping of `pid`, with its resident and locked sizes.
pub fn mappings(pid: i32) -> Vec<Mapping> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut found: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let kb = |value: Option<&str>| value.and_then(|v| v.parse().ok()).unwrap_or(0);
        match (words.next(), found.last_mut()) {
            (Some("Rss:"), Some(mapping)) => mapping.rss_kb = kb(words.next()),
            (Some("Locked:"), Some(mapping)) => mapping.locked_kb = kb(words.next()),
            (Some(range), _) if range.contains('-') && !range.ends_with(':') => {
                found.push(Mapping {
                    range: range.to_owned(),
                    name: words.nth(4).unwrap_or("").to_owned(),
                    rss_kb: 0,
                    locked_kb: 0,
                })
            }
            _ => {}
        }
    }
    found
}

/// Field `key` of /proc/PID/status, first number.
pub fn proc_status_field(pid: i32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
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

/// A Unix socket listener run as `nobody` (python3): it appends every byte
/// each connection sends to a file and prints how many once the peer closes
/// or has sent nothing for 5 s.
pub struct NobodyListener {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    /// The file holding everything received.
    pub received: PathBuf,
}

impl NobodyListener {
    /// Listens at `socket`, whose directory `nobody` may write, and keeps
    /// what it receives in `socket` + `.received`.
    pub fn start(socket: &Path) -> Self {
        const LISTENER: &str = "import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
print('listening', flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    got = b''
    try:
        while chunk := c.recv(65536):
            got += chunk
    except TimeoutError:
        pass
    c.close()
    with open(sys.argv[2], 'ab') as f:
        f.write(got)
    print(len(got), flush=True)
";
        let received = PathBuf::from(format!("{}.received", socket.display()));
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", LISTENER])
            .arg(socket)
            .arg(&received)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start listener");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut listener = Self {
            child,
            lines: std::io::BufRead::lines(std::io::BufReader::new(stdout)),
            received,
        };
        assert_eq!(listener.next_line(), "listening");
        listener
    }

    /// The listener's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line it prints: the byte count of a closed connection.
    pub fn next_line(&mut self) -> String {
        self.lines
            .next()
            .expect("the listener is running")
            .expect("read the listener")
    }
}

impl Drop for NobodyListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
