//! Shell sessions with their own session leader, as a user's terminal is,
//! and the secrets and holders a test sets up in them.

use std::{
    fs,
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;

use crate::{Guardian, bin, random_bytes, scratch_dir, send_signal, wait_until};

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

    /// Types `line` into the shell as it is, as a user would (`exit`).
    pub fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
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
