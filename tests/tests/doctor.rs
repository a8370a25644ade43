//! `doctor` on this host, as root and as `nobody`, with a guardian running
//! and without: each line and the exit code must match the host's facts,
//! read here independently (the LSM list, the kernel release, the sysctls,
//! `ps --version`) and the guardian's own `status`.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    process::{Command, Output, Stdio},
};

use e2e::{Guardian, bin, scratch_dir, stderr};
use serde_json::Value;

/// `doctor`'s code when the guardian is not in its strongest mode.
const NOT_STRONGEST: i32 = 7;

/// A `/proc/sys` or securityfs file, trimmed; `None` where it is missing.
fn read(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim_end_matches('\n').to_owned())
}

fn number(path: &str) -> Option<u32> {
    read(path).and_then(|text| text.trim().parse().ok())
}

/// `major.minor` of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = read("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// `doctor` as root, or as `nobody`, against `socket`.
fn doctor(socket: &std::path::Path, as_nobody: bool, json: bool) -> Output {
    let mut command = match as_nobody {
        true => {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin());
            command
        }
        false => Command::new(bin()),
    };
    command.arg("doctor").arg("--socket").arg(socket);
    if json {
        command.arg("--json");
    }
    command.stdin(Stdio::null()).output().expect("run doctor")
}

/// The line of check `name`: its verdict and what it found (fix lines,
/// indented, are not check lines).
fn line<'a>(text: &'a str, name: &str) -> (&'a str, &'a str) {
    text.lines()
        .filter(|line| !line.starts_with(' '))
        .find_map(|line| {
            let verdict = line.split_whitespace().next()?;
            let found = line[verdict.len()..].trim_start().strip_prefix(name)?;
            found
                .starts_with(' ')
                .then(|| (verdict, found.trim_start()))
        })
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
}

/// Checks one run of `doctor` against the host and `status` (the
/// guardian's, `None` when none runs).
fn check(output: &Output, json: &Output, status: Option<&Value>, as_nobody: bool) {
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let who = if as_nobody { "nobody" } else { "root" };
    let strongest =
        status.is_some_and(|status| status["tamper_protection"] == "bpf-lsm+tracepoints");
    let code = if strongest { 0 } else { NOT_STRONGEST };
    assert_eq!(
        output.status.code(),
        Some(code),
        "{who}: {text}{}",
        stderr(output)
    );
    assert!(!stderr(output).contains("panicked"), "{}", stderr(output));

    // BPF LSM, against the list read here.
    let lsms = read("/sys/kernel/security/lsm").expect("securityfs (the test runs as root)");
    let bpf = lsms.split(',').any(|lsm| lsm == "bpf");
    let (verdict, found) = line(&text, "bpf-lsm");
    let world_readable = fs::metadata("/sys/kernel/security/lsm")
        .is_ok_and(|meta| meta.permissions().mode() & 0o004 != 0);
    if !as_nobody || world_readable {
        assert!(found.contains("/sys/kernel/security/lsm"), "{who}: {found}");
        assert!(found.contains(&lsms), "{who}: {found}");
        match bpf {
            true => {
                // In the list, and (where a guardian runs) its programs loaded.
                let loaded = status.is_none_or(|status| status["lsm_error"].is_null());
                assert_eq!(verdict == "ok", loaded, "{who}: {found}");
            }
            false => {
                assert_eq!(verdict, "missing", "{who}: {found}");
                let wanted = format!("lsm={lsms},bpf");
                assert!(
                    text.contains(&format!("add {wanted} to GRUB_CMDLINE_LINUX")),
                    "{text}"
                );
                assert!(text.contains(&format!("grubby --update-kernel=ALL --args={wanted}")));
            }
        }
    }

    // The kernel and what it implies.
    let release = read("/proc/sys/kernel/osrelease").unwrap();
    let version = kernel_version();
    let (verdict, found) = line(&text, "kernel");
    assert!(found.starts_with(&release), "{found}");
    assert_eq!(verdict == "ok", version >= (6, 13), "{found}");
    let (verdict, found) = line(&text, "peer-pidfd");
    assert_eq!(verdict == "ok", version >= (6, 5), "{found}");
    if let Some(status) = status {
        assert_eq!(
            verdict == "ok",
            status["client_pinning"] == "so_peerpidfd",
            "{found}: {status}"
        );
    }
    let (verdict, found) = line(&text, "early-kill");
    match status {
        Some(status) => assert_eq!(
            verdict == "ok",
            status["early_kill_error"].is_null(),
            "{found}: {status}"
        ),
        None => assert_eq!(verdict == "ok", version >= (6, 13), "{found}"),
    }

    // The sysctls.
    let (verdict, found) = line(&text, "io-uring");
    match number("/proc/sys/kernel/io_uring_disabled") {
        Some(2) => assert_eq!(verdict, "ok"),
        Some(value) => assert!(found.starts_with(&format!("{value}: ")), "{found}"),
        None => assert!(found.contains("older than 6.6"), "{found}"),
    }
    let (verdict, found) = line(&text, "ptrace-scope");
    match number("/proc/sys/kernel/yama/ptrace_scope") {
        None => assert!(
            verdict == "missing" && found.contains("Yama is not active"),
            "{found}"
        ),
        Some(0) => assert_eq!(verdict, "weaker", "{found}"),
        Some(_) => assert_eq!(verdict, "ok", "{found}"),
    }
    let (verdict, found) = line(&text, "core-pattern");
    let pattern = read("/proc/sys/kernel/core_pattern").unwrap();
    match pattern.strip_prefix('|') {
        Some(helper) => {
            let helper = helper.split_whitespace().next().unwrap_or_default();
            assert!(found.starts_with(&format!("piped to {helper}:")), "{found}");
            let ebpf = status.is_some_and(|status| status["watch_mode"] == "ebpf-tracepoints");
            assert_eq!(verdict == "ok", ebpf, "{found}");
        }
        None => assert!(
            verdict == "ok" && found.starts_with(&format!("a file ({pattern})")),
            "{found}"
        ),
    }
    let (verdict, found) = line(&text, "tiocsti");
    match number("/proc/sys/dev/tty/legacy_tiocsti") {
        Some(0) => assert_eq!(verdict, "ok", "{found}"),
        Some(value) => assert!(
            verdict == "weaker" && found.starts_with(&format!("{value}: ")),
            "{found}"
        ),
        None => assert!(found.contains("older than 6.2"), "{found}"),
    }

    // procps.
    let (_, found) = line(&text, "procps");
    let ps = Command::new("ps").arg("--version").output();
    match ps {
        Ok(ps) => {
            let said = String::from_utf8_lossy(&ps.stdout).into_owned();
            if said.contains("procps-ng 4.0.") {
                assert!(
                    found.contains("reads every process's /proc/PID/environ"),
                    "{found}"
                );
            }
        }
        Err(_) => assert_eq!(found, "no ps here"),
    }

    // The guardian.
    let (verdict, found) = line(&text, "guardian");
    match status {
        Some(status) => {
            let running = format!(
                "running (pid {}, version {}), tamper protection {}",
                status["pid"],
                status["version"].as_str().unwrap(),
                status["tamper_protection"].as_str().unwrap()
            );
            assert!(found.starts_with(&running), "{found}");
            assert_eq!(verdict == "ok", strongest, "{found}");
            if status["tamper_protection"] == "ebpf-tracepoints" {
                let fix = match bpf {
                    true => "yet the kernel refused the guardian's BPF LSM programs",
                    false => "make BPF LSM active (bpf-lsm)",
                };
                assert!(text.contains(fix), "{text}");
            }
        }
        None => assert!(
            verdict == "missing" && found.starts_with("not reached: "),
            "{found}"
        ),
    }

    // --json says the same, with the same exit code.
    assert_eq!(json.status.code(), Some(code), "{}", stderr(json));
    let report: Value = serde_json::from_slice(&json.stdout).expect("doctor --json");
    assert_eq!(report["strongest"], strongest);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 11);
    for check in checks {
        let name = check["name"].as_str().unwrap();
        let (verdict, found) = line(&text, name);
        assert_eq!(check["verdict"], verdict, "{name}");
        assert_eq!(check["found"], found, "{name}");
    }
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn doctor_matches_the_host_with_a_guardian_running() {
    let guardian = Guardian::start("doctor");
    let status = guardian.status();
    for as_nobody in [false, true] {
        let text = doctor(&guardian.socket, as_nobody, false);
        let json = doctor(&guardian.socket, as_nobody, true);
        check(&text, &json, Some(&status), as_nobody);
    }
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn doctor_matches_the_host_without_a_guardian() {
    let socket = scratch_dir("doctor-none").join("no-guardian.sock");
    for as_nobody in [false, true] {
        let text = doctor(&socket, as_nobody, false);
        let json = doctor(&socket, as_nobody, true);
        check(&text, &json, None, as_nobody);
        let said = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(said.contains("cannot reach the guardian"), "{said}");
    }
}
