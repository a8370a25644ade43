//! Issue 16, items 3 and 4: the client talks only to a root guardian, and no
//! other user can redirect the guardian's socket, audit log or policy file.
//! Each test plants what a local attacker could (a listener of `nobody`'s, a
//! link, another user's file, loose modes) and starts a real guardian on it.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use e2e::{
    Guardian, NobodyListener, Paths, bin, output_with_input, random_bytes, scratch_dir,
    send_signal, stderr, wait_until,
};
use nix::sys::signal::Signal;

const NOBODY: u32 = 65534;

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// A directory of root's, 0755 whatever the umask.
fn root_dir(path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    set_mode(path, 0o755);
    path.to_owned()
}

/// A scratch directory with an empty policy file (root's, 0644) and the
/// paths a test guardian uses there unless a test plants something else.
fn layout(tag: &str) -> (PathBuf, Paths) {
    let dir = root_dir(&scratch_dir(tag));
    let config = dir.join("config.toml");
    fs::write(&config, "").unwrap();
    set_mode(&config, 0o644);
    let paths = Paths {
        socket: dir.join("guardian.sock"),
        audit: dir.join("audit/audit.jsonl"),
        config,
    };
    (dir, paths)
}

/// Starts a guardian that must refuse to start; returns its log.
fn refused(dir: &Path, paths: &Paths) -> String {
    match Guardian::try_start_at(dir, paths) {
        Ok(guardian) => panic!("the guardian started: {}", guardian.log()),
        Err(log) => log,
    }
}

/// A root file whose only line is torn (no newline), which the audit log's
/// repair on open would cut off and write a record after.
const PRECIOUS: &str = "root's data, whose last line has no newline";

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_client_sends_nothing_to_a_listener_that_is_not_root() {
    let dir = scratch_dir("edges-client");
    let open = dir.join("open");
    fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    let socket = open.join("guardian.sock");
    let mut listener = NobodyListener::start(&socket);
    let expected = format!(
        "refusing to talk to PID {} (uid {NOBODY}) on {}: the guardian runs as root; \
         someone else is listening there",
        listener.pid(),
        socket.display()
    );
    let secret: Vec<u8> = random_bytes(16)
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect();
    let mut put = Command::new(bin());
    put.env("NINGEN_SHIKKAKU_SOCKET", &socket).args([
        "put",
        "k",
        "--bind",
        &std::process::id().to_string(),
    ]);
    let put = output_with_input(&mut put, &secret);
    assert!(
        !put.status.success() && stderr(&put).contains(&expected),
        "{}",
        stderr(&put)
    );
    assert_eq!(listener.next_line(), "0", "the listener got bytes of put");
    let exec = Command::new(bin())
        .env("NINGEN_SHIKKAKU_SOCKET", &socket)
        .args(["exec", "--env", "T=k", "--", "true"])
        .output()
        .unwrap();
    assert!(
        !exec.status.success() && stderr(&exec).contains(&expected),
        "{}",
        stderr(&exec)
    );
    assert_eq!(listener.next_line(), "0", "the listener got bytes of exec");
    assert_eq!(fs::read(&listener.received).unwrap(), b"");
    drop(listener);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_guardian_names_another_user_listening_on_its_socket_path() {
    let (dir, mut paths) = layout("edges-held");
    // A sticky directory like /tmp: trusted, but anyone may bind in it first.
    let shared = dir.join("tmp");
    fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    paths.socket = shared.join("guardian.sock");
    let mut listener = NobodyListener::start(&paths.socket);
    let log = refused(&dir, &paths);
    let held = format!(
        "{} is held by PID {} (uid {NOBODY}), not by root",
        paths.socket.display(),
        listener.pid()
    );
    assert!(log.contains(&held), "{log}");
    assert_eq!(listener.next_line(), "0", "the guardian's probe sent bytes");
    drop(listener);
    // The dead listener's socket is nobody's: left alone, and named.
    let log = refused(&dir, &paths);
    let owned = format!("{} is owned by uid {NOBODY}", paths.socket.display());
    assert!(log.contains(&owned), "{log}");
    assert!(paths.socket.exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_socket_directory_another_user_could_redirect_is_refused() {
    let (dir, mut paths) = layout("edges-sockdir");
    let real = root_dir(&dir.join("real"));
    symlink(&real, dir.join("link")).unwrap();
    let nobodys = root_dir(&dir.join("nobodys"));
    chown(&nobodys, Some(NOBODY), Some(NOBODY)).unwrap();
    let open = root_dir(&dir.join("open"));
    set_mode(&open, 0o777);
    let cases = [
        (
            "link",
            format!("{} is a symbolic link", dir.join("link").display()),
        ),
        (
            "nobodys",
            format!("{} is owned by uid {NOBODY}", nobodys.display()),
        ),
        (
            "open",
            format!(
                "{} is writable by users other than root (mode 0777)",
                open.display()
            ),
        ),
    ];
    for (name, expected) in cases {
        paths.socket = dir.join(name).join("guardian.sock");
        let log = refused(&dir, &paths);
        assert!(log.contains(&expected), "{name}: {log}");
    }
    assert_eq!(
        fs::read_dir(&real).unwrap().count(),
        0,
        "bound behind the link"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn two_guardians_never_write_one_audit_log() {
    let (dir, paths) = layout("edges-twologs");
    let mut first = Guardian::try_start_at(&dir, &paths).unwrap();
    let second = Paths {
        socket: dir.join("second.sock"),
        audit: paths.audit.clone(),
        config: paths.config.clone(),
    };
    let log = refused(&dir, &second);
    let expected = format!("is written by another guardian (pid {})", first.pid());
    assert!(log.contains(&expected), "{log}");
    assert!(!second.socket.exists(), "the refused guardian listened");
    // Once the first is gone, the log is free for the next.
    send_signal(first.pid(), Signal::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || !first.is_running()));
    let next = Guardian::try_start_at(&dir, &second).unwrap();
    let records = next.audit_records();
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    drop(next);
    drop(first);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn only_a_dead_socket_of_roots_is_replaced() {
    let (dir, paths) = layout("edges-stale");
    let mut first = Guardian::try_start_at(&dir, &paths).unwrap();
    let socket = fs::symlink_metadata(&paths.socket).unwrap();
    assert_eq!((socket.mode(), socket.uid()), (0o140666, 0), "socket mode");
    let elsewhere = Paths {
        socket: paths.socket.clone(),
        audit: dir.join("audit/other.jsonl"),
        config: paths.config.clone(),
    };
    let log = refused(&dir, &elsewhere);
    assert!(log.contains("a guardian is already listening on"), "{log}");
    send_signal(first.pid(), Signal::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || !first.is_running()));
    assert!(
        paths.socket.exists(),
        "the killed guardian's socket is left"
    );
    let second = Guardian::try_start_at(&dir, &paths).unwrap();
    assert_eq!(second.status()["secrets"], 0);
    drop(second);
    drop(first);

    let (dir, mut paths) = layout("edges-notsocket");
    let precious = dir.join("precious");
    fs::write(&precious, PRECIOUS).unwrap();
    set_mode(&precious, 0o600);
    symlink(&precious, dir.join("link.sock")).unwrap();
    fs::write(dir.join("file.sock"), PRECIOUS).unwrap();
    for (name, expected) in [
        ("link.sock", "is a symbolic link"),
        ("file.sock", "is not a socket"),
    ] {
        paths.socket = dir.join(name);
        let log = refused(&dir, &paths);
        assert!(log.contains(expected), "{name}: {log}");
        assert_eq!(fs::read_to_string(&paths.socket).unwrap(), PRECIOUS);
    }
    assert_eq!(mode_of(&precious), 0o600, "chmod'ed through the link");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn an_audit_log_linked_elsewhere_is_refused_and_its_target_untouched() {
    let (dir, mut paths) = layout("edges-auditlink");
    let victim = root_dir(&dir.join("victim"));
    fs::write(victim.join("audit.jsonl"), PRECIOUS).unwrap();
    set_mode(&victim.join("audit.jsonl"), 0o600);
    symlink(&victim, dir.join("audit")).unwrap();
    let log = refused(&dir, &paths);
    let expected = format!("{} is a symbolic link", dir.join("audit").display());
    assert!(log.contains(&expected), "{log}");
    assert_eq!(
        fs::read_to_string(victim.join("audit.jsonl")).unwrap(),
        PRECIOUS
    );
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
    assert_eq!(mode_of(&victim), 0o755, "the link's target was chmod'ed");

    // The file itself a link, in a real audit directory.
    paths.audit = dir.join("real-audit/audit.jsonl");
    fs::create_dir(dir.join("real-audit")).unwrap();
    set_mode(&dir.join("real-audit"), 0o700);
    symlink(victim.join("audit.jsonl"), &paths.audit).unwrap();
    let log = refused(&dir, &paths);
    let expected = format!("{} is a symbolic link", paths.audit.display());
    assert!(log.contains(&expected), "{log}");
    assert_eq!(
        fs::read_to_string(victim.join("audit.jsonl")).unwrap(),
        PRECIOUS
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn loose_modes_of_roots_audit_directory_and_file_are_corrected() {
    let (dir, paths) = layout("edges-auditmode");
    let audit_dir = paths.audit.parent().unwrap().to_owned();
    fs::create_dir(&audit_dir).unwrap();
    set_mode(&audit_dir, 0o777);
    fs::write(&paths.audit, "").unwrap();
    set_mode(&paths.audit, 0o666);
    let guardian = Guardian::try_start_at(&dir, &paths).unwrap();
    assert_eq!((mode_of(&audit_dir), mode_of(&paths.audit)), (0o700, 0o600));
    let log = guardian.log();
    for (path, from, to) in [(&audit_dir, "0777", "0700"), (&paths.audit, "0666", "0600")] {
        let said = format!(
            "corrected the mode of {} from {from} to {to}",
            path.display()
        );
        assert!(
            log.lines()
                .any(|line| line.contains("WARN") && line.contains(&said)),
            "{log}"
        );
    }
    assert!(!guardian.audit_of("status").is_empty(), "the log is in use");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_policy_file_another_user_could_write_is_refused() {
    let (dir, mut paths) = layout("edges-config");
    fs::write(&paths.config, "max_secret_bytes = 1\n").unwrap();
    set_mode(&paths.config, 0o666);
    let log = refused(&dir, &paths);
    let expected = format!(
        "refusing the policy file: {} is writable by users other than root (mode 0666)",
        paths.config.display()
    );
    assert!(log.contains(&expected), "{log}");

    set_mode(&paths.config, 0o644);
    chown(&paths.config, Some(NOBODY), Some(NOBODY)).unwrap();
    let log = refused(&dir, &paths);
    let expected = format!("{} is owned by uid {NOBODY}", paths.config.display());
    assert!(log.contains(&expected), "{log}");

    let open = root_dir(&dir.join("etc"));
    set_mode(&open, 0o777);
    fs::write(open.join("config.toml"), "").unwrap();
    set_mode(&open.join("config.toml"), 0o644);
    paths.config = open.join("config.toml");
    let log = refused(&dir, &paths);
    assert!(
        log.contains(&format!("{} is writable", open.display())),
        "{log}"
    );

    // A link is followed only to a file that passes the same checks.
    let trusted = root_dir(&dir.join("trusted"));
    fs::write(trusted.join("config.toml"), "max_secret_bytes = 8\n").unwrap();
    set_mode(&trusted.join("config.toml"), 0o644);
    paths.config = dir.join("linked.toml");
    symlink(trusted.join("config.toml"), &paths.config).unwrap();
    let guardian = Guardian::try_start_at(&dir, &paths).unwrap();
    let mut put = guardian.command();
    put.args(["put", "big", "--bind", &std::process::id().to_string()]);
    let output = output_with_input(&mut put, b"123456789");
    assert!(
        stderr(&output).contains("larger than the limit"),
        "{}",
        stderr(&output)
    );
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn an_audit_file_of_another_user_is_refused() {
    let (dir, paths) = layout("edges-auditowner");
    let audit_dir = paths.audit.parent().unwrap();
    fs::create_dir(audit_dir).unwrap();
    set_mode(audit_dir, 0o700);
    fs::write(&paths.audit, PRECIOUS).unwrap();
    set_mode(&paths.audit, 0o600);
    chown(&paths.audit, Some(NOBODY), Some(NOBODY)).unwrap();
    let log = refused(&dir, &paths);
    let expected = format!("{} is owned by uid {NOBODY}", paths.audit.display());
    assert!(log.contains(&expected), "{log}");
    assert_eq!(fs::read_to_string(&paths.audit).unwrap(), PRECIOUS);
    fs::remove_dir_all(&dir).unwrap();
}

/// Issue 27, item 5: a socket in the audit log's directory, which the
/// guardian makes root's alone, would shut every other user out; the
/// guardian refuses the layout at start, saying why and what to do.
#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_socket_in_the_audit_directory_is_refused_at_start() {
    let (dir, mut paths) = layout("shared-dir");
    paths.socket = dir.join("audit/g.sock");
    let log = refused(&dir, &paths);
    assert!(log.contains("share a directory"), "{log}");
    assert!(log.contains("/run/ningen-shikkaku/guardian.sock"), "{log}");
    assert!(!paths.socket.exists(), "a socket was made");
}
