//! Helpers for the end-to-end tests: start a real guardian (as root, with its
//! eBPF programs), open shell sessions with their own session leader, and run
//! the `ningen-shikkaku` CLI inside or outside them as a user would.

mod attackers;
mod guardian;
mod logind;
mod procfs;
mod session;

pub use attackers::*;
pub use guardian::*;
pub use logind::*;
pub use procfs::*;
pub use session::*;

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

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

/// Polls `cond` every 10 ms until it holds or `timeout` (times the
/// slowdown below) passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + stretched(timeout);
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

/// How many times longer than on real hardware a test waits for what must
/// happen: `NINGEN_SHIKKAKU_TEST_SLOWDOWN`, which `cargo xtask test
/// --kernel` sets when its virtual machine is emulated (TCG runs code many
/// times slower: a guardian took 4 to 17 s to start there), else 1.
fn slowdown() -> u32 {
    std::env::var("NINGEN_SHIKKAKU_TEST_SLOWDOWN")
        .ok()
        .and_then(|factor| factor.parse().ok())
        .map_or(1, |factor: u32| factor.max(1))
}

/// `bound` times the slowdown above: under emulation a bound measured on
/// real hardware (a holder dead within 50 ms) stretches like the machine.
pub fn stretched(bound: Duration) -> Duration {
    bound * slowdown()
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

/// Stderr of a finished command, for assertion messages.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `len` random bytes from the kernel.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    let mut urandom = fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut urandom, &mut bytes).expect("read /dev/urandom");
    bytes
}
