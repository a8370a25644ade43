//! A private D-Bus system bus and a fake logind on it (`tests/dbus/`), for
//! the screen lock and suspend tests: the guardian is pointed at the bus by
//! DBUS_SYSTEM_BUS_ADDRESS.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{scratch_dir, wait_until};

/// `dbus-daemon` with a system-bus policy, and the fake logind owning
/// `org.freedesktop.login1` on it, driven through its standard input.
pub struct FakeLogind {
    bus: Child,
    logind: Option<Child>,
    stdin: Option<ChildStdin>,
    said: Arc<Mutex<Vec<String>>>,
    socket: PathBuf,
    dir: PathBuf,
}

impl FakeLogind {
    /// Starts the bus, and logind on it.
    pub fn start(tag: &str) -> Self {
        Self::start_in(scratch_dir(tag))
    }

    /// The same, in `dir` (removed when dropped).
    pub fn start_in(dir: PathBuf) -> Self {
        let socket = dir.join("system_bus_socket");
        let mut fake = Self {
            bus: Self::start_bus(&dir, &socket),
            logind: None,
            stdin: None,
            said: Arc::default(),
            socket,
            dir,
        };
        fake.start_logind();
        fake
    }

    /// Where the guardian finds the bus (DBUS_SYSTEM_BUS_ADDRESS).
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// The address of the bus [`FakeLogind::start_in`] will start in `dir`.
    pub fn address_in(dir: &Path) -> String {
        format!("unix:path={}", dir.join("system_bus_socket").display())
    }

    fn start_bus(dir: &Path, socket: &Path) -> Child {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/system-bus.conf");
        let config = fs::read_to_string(here).expect("tests/dbus/system-bus.conf");
        let config_path = dir.join("bus.conf");
        let _ = fs::remove_file(socket);
        fs::write(
            &config_path,
            config.replace("@SOCKET@", &socket.display().to_string()),
        )
        .expect("write the bus configuration");
        let bus = Command::new("/usr/bin/dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            // It complains it cannot raise its descriptor limit: harmless.
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        assert!(
            wait_until(Duration::from_secs(10), || socket.exists()),
            "dbus-daemon did not listen"
        );
        bus
    }

    fn start_logind(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/fake_logind.py");
        let mut logind = Command::new("/usr/bin/python3")
            .arg(script)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.address())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake logind");
        let stdout = logind.stdout.take().expect("piped stdout");
        let said = Arc::clone(&self.said);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                said.lock().expect("lines").push(line);
            }
        });
        self.stdin = logind.stdin.take();
        self.logind = Some(logind);
        assert!(
            wait_until(Duration::from_secs(10), || self.said("ready").is_some()),
            "the fake logind did not start"
        );
    }

    /// The first line it printed that starts with `prefix`.
    fn said(&self, prefix: &str) -> Option<String> {
        let said = self.said.lock().expect("lines");
        said.iter().find(|line| line.starts_with(prefix)).cloned()
    }

    /// True once the guardian asked which session `pid` is in.
    pub fn was_asked_about(&self, pid: i32) -> bool {
        self.said(&format!("asked {pid}"))
            .is_some_and(|line| line == format!("asked {pid}"))
    }

    /// Sends one command line and waits for its "ok".
    fn command(&mut self, line: &str) {
        let oks = || {
            self.said
                .lock()
                .expect("lines")
                .iter()
                .filter(|l| *l == "ok")
                .count()
        };
        let before = oks();
        let stdin = self.stdin.as_mut().expect("logind runs");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to logind");
        stdin.flush().expect("flush");
        assert!(
            wait_until(Duration::from_secs(10), || oks() > before),
            "the fake logind did not do {line:?}"
        );
    }

    /// A session `id` led by `leader`.
    pub fn add_session(&mut self, id: &str, leader: i32) {
        self.command(&format!("add {id} {leader}"));
    }

    /// logind locks session `id`.
    pub fn lock(&mut self, id: &str) {
        self.command(&format!("lock {id}"));
    }

    /// logind locks session `id` (digits, the first not 0); returns when it
    /// sent the signal and when a plain subscriber of its own received it
    /// (CLOCK_MONOTONIC ns).
    pub fn lock_timed(&mut self, id: &str) -> (u64, u64) {
        self.lock(id);
        // As logind (and the fake) spell it in a path: a leading digit escaped.
        let escaped = format!("_3{id}");
        let time = |prefix: &str| {
            let said = self.said.lock().expect("lines");
            let line = said.iter().rev().find(|line| line.starts_with(prefix))?;
            line.rsplit(' ').next()?.parse::<u64>().ok()
        };
        let received = format!("received {escaped} ");
        assert!(
            wait_until(Duration::from_secs(5), || time(&received).is_some()),
            "no subscriber received the lock"
        );
        let emitted = time(&format!("emitted {id} ")).expect("no emission time");
        (emitted, time(&received).expect("received"))
    }

    /// logind says the machine is about to sleep (`true`) or has woken.
    pub fn prepare_for_sleep(&mut self, starting: bool) {
        self.command(&format!("sleep {starting}"));
    }

    /// Another connection sends a look-alike Lock of session `id`, to the
    /// guardian alone and to everyone.
    pub fn impostor_lock(&mut self, id: &str) {
        self.command(&format!("impostor {id}"));
    }
}

impl Drop for FakeLogind {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut logind) = self.logind.take() {
            let _ = logind.kill();
            let _ = logind.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
