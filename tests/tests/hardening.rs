//! Plaintext only in locked pages, and a guardian that hardens itself: memory
//! scans of the guardian and the client, core dumps, seccomp and VmLck.

use std::{
    fs,
    io::Write,
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
    time::Duration,
};

use e2e::{
    Guardian, Session, find_in_memory, is_blocked_reading, proc_status_field, random_bytes,
    send_signal, unread_in_pipe, wait_until,
};
use nix::sys::signal::Signal;

/// The marker must appear nowhere readable, or (without memfd_secret) only in
/// locked mappings.
fn assert_marker_only_locked(pid: i32, marker: &[u8], backend: &str, when: &str) {
    let hits = find_in_memory(pid, marker);
    if backend == "memfd_secret" {
        assert!(hits.is_empty(), "{when}: marker readable in {hits:#?}");
    } else {
        assert!(
            hits.iter().all(|hit| hit.locked_kb > 0),
            "{when}: marker in unlocked {hits:#?}"
        );
    }
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_secret_is_in_no_readable_page_of_the_guardian_before_or_after_the_wipe() {
    // Without eBPF: with it, the scan's own open of /proc/PID/mem is stopped
    // as an attack (tests/tests/read_paths.rs). Where secrets live does not
    // depend on it.
    let guardian = Guardian::start_without_ebpf("memscan");
    let backend = guardian.status()["memory_backend"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut session = Session::start(&guardian);
    let marker = random_bytes(32);
    let other = random_bytes(32);
    fs::write(session.dir().join("marker"), &marker).unwrap();
    fs::write(session.dir().join("other"), &other).unwrap();
    assert_eq!(session.run("$NS put m < marker").0, 0);
    assert_eq!(session.run("$NS put o < other").0, 0);
    let (rc, out, _) = session.run("$NS get m");
    assert_eq!((rc, out), (0, marker.clone()));
    // Control: the scanner does find the marker where it is in plain memory.
    assert!(
        !find_in_memory(std::process::id() as i32, &marker).is_empty(),
        "scanner is blind"
    );
    assert_marker_only_locked(guardian.pid(), &marker, &backend, "after put and get");

    assert_eq!(session.run("$NS revoke m").0, 0);
    assert!(
        find_in_memory(guardian.pid(), &marker).is_empty(),
        "marker survives revoke"
    );

    session.signal_leader(Signal::SIGKILL);
    assert!(wait_until(
        Duration::from_secs(5),
        || guardian.status()["secrets"] == 0
    ));
    assert!(
        find_in_memory(guardian.pid(), &other).is_empty(),
        "marker survives the trigger"
    );
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_client_holds_the_secret_only_in_locked_pages() {
    // Without eBPF, so the scan may open the client's /proc/PID/mem (see above).
    let guardian = Guardian::start_without_ebpf("clientscan");
    let backend = guardian.status()["memory_backend"]
        .as_str()
        .unwrap()
        .to_owned();
    let marker = random_bytes(32);
    let mut put = guardian
        .command()
        .args(["put", "m", "--bind", &std::process::id().to_string()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = put.stdin.take().unwrap();
    stdin.write_all(&marker).unwrap();
    stdin.flush().unwrap();
    // Scan once the client has taken the marker out of the pipe and waits
    // in read for EOF: the marker is then in its memory, and stays there.
    let client = put.id() as i32;
    let waiting = wait_until(Duration::from_secs(10), || {
        unread_in_pipe(&stdin) == 0 && is_blocked_reading(client, &stdin)
    });
    assert!(
        waiting,
        "the client never read the secret and waited for more"
    );
    assert_marker_only_locked(client, &marker, &backend, "client holding the secret");
    drop(stdin);
    let output = put.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(guardian.status()["secrets"], 1);
}

/// Puts a system file back as it was, even when the test fails.
struct RestoreFile {
    path: &'static str,
    saved: String,
}

impl RestoreFile {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            saved: fs::read_to_string(path).unwrap(),
        }
    }
}

impl Drop for RestoreFile {
    fn drop(&mut self) {
        let _ = fs::write(self.path, &self.saved);
    }
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_crashing_guardian_leaves_no_core_with_the_secret() {
    let pattern_path = "/proc/sys/kernel/core_pattern";
    let _restore = RestoreFile::new(pattern_path);
    let dir = e2e::scratch_dir("cores");
    fs::write(pattern_path, format!("{}/core.%p", dir.display())).unwrap();
    // Children inherit an unlimited RLIMIT_CORE, so only the guardian's own
    // hardening can stop its core dump.
    let unlimited = nix::sys::resource::RLIM_INFINITY;
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_CORE,
        unlimited,
        unlimited,
    )
    .unwrap();
    // Control: an ordinary process that crashes does dump core here.
    let mut control = Command::new("sleep").arg("100").spawn().unwrap();
    send_signal(control.id() as i32, Signal::SIGSEGV);
    control.wait().unwrap();
    let dumped = wait_until(Duration::from_secs(5), || {
        fs::read_dir(&dir).unwrap().count() > 0
    });
    assert!(
        dumped,
        "control process left no core: the test could not see a guardian core either"
    );
    for core in fs::read_dir(&dir).unwrap().flatten() {
        fs::remove_file(core.path()).unwrap();
    }

    let mut guardian = Guardian::start("coredump");
    let mut session = Session::start(&guardian);
    let marker = random_bytes(32);
    fs::write(session.dir().join("marker"), &marker).unwrap();
    assert_eq!(session.run("$NS put m < marker").0, 0);
    // Rust's runtime catches the first SIGSEGV and restores the default action
    // (a real fault meets it when the instruction runs again), so signal until
    // the guardian dies. A core is written before the process exits: once the
    // guardian is reaped, any core it dumped is in the directory.
    let mut ended = None;
    let crashed = wait_until(Duration::from_secs(10), || {
        ended = guardian.exit_status();
        if ended.is_none() {
            send_signal(guardian.pid(), Signal::SIGSEGV);
        }
        ended.is_some()
    });
    assert!(crashed, "the guardian survived SIGSEGV");
    let ended = ended.unwrap();
    assert_eq!(ended.signal(), Some(libc::SIGSEGV), "{ended}");
    assert!(!ended.core_dumped(), "the kernel reports a core dump");

    for core in fs::read_dir(&dir).unwrap().flatten() {
        let bytes = fs::read(core.path()).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "marker in {:?}",
            core.path()
        );
    }
    let cores = fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        cores, 0,
        "the guardian is non-dumpable with RLIMIT_CORE 0, yet dumped core"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn seccomp_is_active_and_the_secret_pages_are_locked() {
    let guardian = Guardian::start("seccomp");
    let pid = guardian.pid();
    assert_eq!(
        proc_status_field(pid, "Seccomp"),
        Some(2),
        "no seccomp filter"
    );
    assert_eq!(proc_status_field(pid, "NoNewPrivs"), Some(1));
    let status = guardian.status();
    let hardening = &status["hardening"];
    assert_eq!(hardening["seccomp"], "filter", "{status}");
    assert!(
        hardening["seccomp_allowed"].as_u64().unwrap() > 20,
        "{status}"
    );
    assert_eq!(hardening["dumpable"], false);
    assert_eq!(hardening["core_limit"], 0);

    let before = proc_status_field(pid, "VmLck").unwrap();
    let mut session = Session::start(&guardian);
    let secret = random_bytes(256 * 1024);
    fs::write(session.dir().join("big"), &secret).unwrap();
    assert_eq!(session.run("$NS put big < big").0, 0);
    let after = proc_status_field(pid, "VmLck").unwrap();
    assert!(
        after >= before + 256,
        "VmLck {before} kB -> {after} kB does not cover 256 KiB"
    );
    assert!(guardian.status()["locked_bytes"].as_u64().unwrap() >= 256 * 1024);
    // mlockall(MCL_ONFAULT): every resident page of the guardian's own memory
    // (heap, stack, anonymous mappings) is locked, so none of it can be swapped.
    let anonymous: Vec<_> = e2e::mappings(pid)
        .into_iter()
        .filter(|m| m.name.is_empty() || m.name == "[heap]" || m.name == "[stack]")
        .collect();
    assert!(anonymous.iter().any(|m| m.name == "[heap]" && m.rss_kb > 0));
    let unlocked: Vec<_> = anonymous
        .iter()
        .filter(|m| m.rss_kb != m.locked_kb)
        .collect();
    assert!(unlocked.is_empty(), "resident but not locked: {unlocked:?}");
    // A syscall outside the allowlist inside the guardian is shown by the
    // seccomp unit test; here, the guardian still serves after all of the above.
    let ok = Command::new(e2e::bin())
        .args(["list"])
        .env("NINGEN_SHIKKAKU_SOCKET", &guardian.socket)
        .output()
        .unwrap();
    assert!(ok.status.success());
}
