//! The hostile helpers the tests run: the Python attackers in
//! tests/helpers, and a listener of `nobody`'s impersonating the guardian.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use serde_json::Value;

use crate::Session;

/// Runs the tamper helper (tests/helpers/attacker.py) as root or as `nobody`.
pub fn attack(mode: &str, target: i32, out: &Path, as_nobody: bool) -> Output {
    helper("attacker.py", as_nobody)
        .arg(mode)
        .arg(target.to_string())
        .arg(out)
        .output()
        .expect("run attacker")
}

/// A tracer of another session, as another user's or the same user's
/// malware: attacker.py seize-hold, which PTRACE_SEIZEs a process and stays
/// its tracer until dropped.
pub struct Tracer {
    child: Child,
    /// What the seize returned ("ptrace returned R errno E"), or empty
    /// when the tracer was killed before it could say.
    pub said: String,
}

impl Tracer {
    /// Seizes `target` from a session of its own, as root or as `nobody`.
    pub fn seize(target: i32, as_nobody: bool) -> Self {
        let mut command = helper("attacker.py", as_nobody);
        command
            .args(["seize-hold", &target.to_string(), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        in_own_session(&mut command);
        let mut child = command.spawn().expect("start tracer");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut said = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut said);
        Self { child, said }
    }

    /// The tracer's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// True if the seize succeeded and the tracer is still attached.
    pub fn is_attached(&self, target: i32) -> bool {
        self.said.starts_with("ptrace returned 0 ")
            && crate::proc_status_field(target, "TracerPid") == Some(u64::from(self.child.id()))
    }

    /// Waits for the tracer to end; its status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().expect("wait for tracer")
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    in_own_session(&mut command);
    command.output().expect("run reader")
}

/// Makes `command`'s child the leader of a session of its own, outside
/// every session under test.
fn in_own_session(command: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
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

/// How the kernel stops an attempt on a ward: the test asserts the one the
/// guardian armed, so the same test runs on kernels with and without BPF LSM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// BPF LSM: the access fails with EPERM or EACCES and the caller lives.
    Denied,
    /// Tracepoints only: the caller is SIGKILLed before its call returns.
    Killed,
}

impl Stop {
    /// The stop `guardian` armed, from its `tamper_protection`.
    pub fn armed_by(guardian: &crate::Guardian) -> Self {
        match guardian.status()["tamper_protection"].as_str() {
            Some("bpf-lsm+tracepoints") => Self::Denied,
            _ => Self::Killed,
        }
    }

    /// `output`, a helper's, shows it stopped at `step`: killed before the
    /// step printed its line, or (denied) every line of the step reports an
    /// error (`-1 errno 1`, `-13`) and the helper exited by itself.
    pub fn assert_stopped_at(self, output: &Output, step: &str) {
        use std::os::unix::process::ExitStatusExt;
        let said = String::from_utf8_lossy(&output.stdout);
        let step_lines: Vec<&str> = said.lines().filter(|l| l.starts_with(step)).collect();
        match self {
            Self::Killed => {
                assert_eq!(
                    output.status.signal(),
                    Some(libc::SIGKILL),
                    "not killed: {output:?}"
                );
                assert!(step_lines.is_empty(), "{step} returned: {said}");
            }
            Self::Denied => {
                assert_eq!(output.status.signal(), None, "killed: {output:?}");
                let failed = |line: &&str| line.contains(" -");
                assert!(step_lines.iter().all(failed), "{step} succeeded: {said}");
            }
        }
    }

    /// What the tamper record says was done to the caller.
    pub fn verdict(self) -> &'static str {
        match self {
            Self::Denied => "denied with an error before any byte was copied; the caller lives",
            Self::Killed => "caller SIGKILLed before any byte was copied",
        }
    }
}
