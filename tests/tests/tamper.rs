//! Attackers stopped in the kernel: ptrace (attach, seize) and
//! process_vm_readv aimed at a holder or at the guardian are denied with an
//! error where BPF LSM runs, or kill the caller at syscall entry where only
//! tracepoints can stop them; either way they copy nothing, are audited,
//! and (by default) wipe what the targeted holder held. A traced process is never handed a secret.

use std::{fs, os::unix::process::ExitStatusExt, process::Command, time::Duration};

use e2e::{
    Guardian, Session, Stop, attack, is_alive, put_marker, start_sleeping_holder, wait_until,
};

/// The attacker was stopped (killed, or denied where BPF LSM runs) before
/// its syscall returned a byte, and `loot` holds none.
fn assert_stopped_before_reading(
    stop: Stop,
    mode: &str,
    output: &std::process::Output,
    loot: &std::path::Path,
    marker: &[u8],
) {
    let step = match mode {
        "readv" => "readv returned",
        _ => "ptrace returned",
    };
    stop.assert_stopped_at(output, step);
    let copied = fs::read(loot).unwrap_or_default();
    assert!(
        !copied.windows(marker.len()).any(|w| w == marker),
        "the secret was copied"
    );
    assert!(copied.iter().all(|&b| b == 0), "some bytes were copied");
}

fn tamper_on_holder(mode: &str, as_nobody: bool) {
    let guardian = Guardian::start(&format!("tamper-{mode}"));
    let mut session = if as_nobody {
        Session::start_as_nobody(&guardian)
    } else {
        Session::start(&guardian)
    };
    let marker = put_marker(&mut session, "tok");
    let holder = start_sleeping_holder(&mut session, "tok");

    let loot = session.dir().join("loot");
    let output = attack(mode, holder, &loot, as_nobody);
    let stop = Stop::armed_by(&guardian);
    assert_stopped_before_reading(stop, mode, &output, &loot, &marker);

    let audited = wait_until(Duration::from_secs(5), || {
        !guardian.audit_of("tamper").is_empty()
    });
    assert!(audited, "no tamper record: {:?}", guardian.audit_records());
    let record = &guardian.audit_of("tamper")[0];
    assert_eq!(record["peer"]["uid"], if as_nobody { 65534 } else { 0 });
    assert_eq!(record["peer"]["comm"], "python3");
    // Its executable, even once killed: the kernel took its name (issue 27).
    let exe = record["peer"]["exe"].as_str().unwrap();
    assert!(exe.contains("python3"), "{record}");
    // The LSM hook is asked for both syscalls, and names itself.
    let syscall = match (stop, mode) {
        (Stop::Denied, _) => "ptrace_access_check",
        (Stop::Killed, "readv") => "process_vm_readv",
        (Stop::Killed, _) => "ptrace",
    };
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains(syscall) && reason.contains(stop.verdict()),
        "{record}"
    );
    assert_eq!(record["names"], serde_json::json!(["tok"]));
    // Fail closed: the targeted holder's secret is wiped and the holder killed.
    assert!(
        wait_until(Duration::from_secs(2), || !is_alive(holder)),
        "holder survived"
    );
    let tamper_trigger = || {
        guardian
            .audit_of("trigger")
            .iter()
            .any(|r| r["reason"] == "tamper")
    };
    assert!(
        wait_until(Duration::from_secs(5), tamper_trigger),
        "no tamper trigger recorded"
    );
    let (rc, _, _) = session.run("$NS get tok");
    assert_ne!(rc, 0);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_tamper_mode_in_force_is_named_and_the_lsm_fallback_says_why() {
    let guardian = Guardian::start("lsm-mode");
    let status = guardian.status();
    match status["tamper_protection"].as_str().unwrap() {
        "bpf-lsm+tracepoints" => assert!(status["lsm_error"].is_null(), "{status}"),
        "ebpf-tracepoints" => {
            let why = status["lsm_error"].as_str().unwrap_or_default();
            assert!(
                ["ptrace_access_check", "BTF", "active LSM list"]
                    .iter()
                    .any(|cause| why.contains(cause)),
                "{status}"
            );
        }
        other => panic!("unexpected tamper protection {other}: {status}"),
    }
    // Issue 25: the fallback before Linux 6.5 (no SO_PEERPIDFD) is named.
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy().into_owned();
    let mut numbers = release
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let expected = match version >= (6, 5) {
        true => "so_peerpidfd",
        false => "pidfd_open at accept",
    };
    assert_eq!(status["client_pinning"], expected, "{release}: {status}");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn process_vm_readv_on_a_holder_by_root_copies_nothing_and_dies() {
    tamper_on_holder("readv", false);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn process_vm_readv_on_a_holder_by_its_own_uid_copies_nothing_and_dies() {
    tamper_on_holder("readv", true);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn ptrace_attach_on_a_holder_by_root_and_by_its_uid_dies() {
    tamper_on_holder("attach", false);
    tamper_on_holder("attach", true);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn ptrace_seize_on_a_holder_by_root_and_by_its_uid_dies() {
    tamper_on_holder("seize", false);
    tamper_on_holder("seize", true);
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn attacks_on_the_guardian_die_and_leave_its_secrets_alone() {
    let guardian = Guardian::start("tamper-guardian");
    let mut session = Session::start(&guardian);
    let marker = put_marker(&mut session, "tok");
    let supervisor = e2e::supervisor_of(guardian.pid());
    let stop = Stop::armed_by(&guardian);
    for target in [guardian.pid(), supervisor] {
        for mode in ["readv", "attach", "seize"] {
            let loot = session.dir().join(format!("loot-{mode}-{target}"));
            let output = attack(mode, target, &loot, false);
            assert_stopped_before_reading(stop, mode, &output, &loot, &marker);
            // Each of the two un-stops the other, so an attach on one must be
            // undone before the other is attached: a root attacker who stops
            // both within the 50 ms watchdog freezes both (as SIGSTOP to both
            // would; see the README's limits).
            let running = || !e2e::is_stopped(guardian.pid()) && !e2e::is_stopped(supervisor);
            assert!(
                wait_until(Duration::from_secs(2), running),
                "left stopped after {mode}"
            );
        }
    }
    // The SIGSTOP a PTRACE_ATTACH queues is undone: both keep running, and
    // the guardian records every attempt once it runs again.
    let recorded = || guardian.audit_of("tamper").len() == 6;
    assert!(
        wait_until(Duration::from_secs(5), recorded),
        "{:?}",
        guardian.audit_of("tamper")
    );
    let running = || !e2e::is_stopped(guardian.pid()) && !e2e::is_stopped(supervisor);
    assert!(
        wait_until(Duration::from_secs(2), running),
        "guardian or supervisor left stopped"
    );
    let (rc, out, _) = session.run("$NS get tok");
    assert_eq!((rc, out), (0, marker));
    assert_eq!(guardian.status()["fail_closed"], "supervisor");
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn a_traced_client_gets_no_secret_and_a_tracer_of_a_holder_dies() {
    let guardian = Guardian::start("strace");
    let mut session = Session::start(&guardian);
    let marker = put_marker(&mut session, "tok");
    let marker = String::from_utf8(marker).unwrap();

    let (rc, out, err) =
        session.run("strace -f -o strace.out $NS exec --env T=tok -- sh -c 'echo $T'");
    assert_ne!(rc, 0, "a traced exec succeeded");
    assert!(err.contains("traced"), "{err}");
    let trace = fs::read_to_string(session.dir().join("strace.out")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&out).contains(&marker) && !trace.contains(&marker));
    let (rc, _, err) = session.run("strace -o /dev/null $NS get tok");
    assert!(rc != 0 && err.contains("traced"), "{err}");

    let holder = start_sleeping_holder(&mut session, "tok");
    let strace = Command::new("strace")
        .args(["-p", &holder.to_string()])
        .output()
        .unwrap();
    match Stop::armed_by(&guardian) {
        Stop::Killed => assert_eq!(
            strace.status.signal(),
            Some(libc::SIGKILL),
            "strace -p was not killed: {strace:?}"
        ),
        Stop::Denied => assert!(
            !strace.status.success()
                && String::from_utf8_lossy(&strace.stderr).contains("not permitted"),
            "strace -p was not denied: {strace:?}"
        ),
    }
}

/// The guardian's attached eBPF programs: its bpf_link descriptors.
fn attached_programs(guardian: i32) -> usize {
    fs::read_dir(format!("/proc/{guardian}/fd"))
        .unwrap()
        .flatten()
        .filter(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link")
        })
        .count()
}

/// The links a guardian under `policy` adds when armed: the
/// address-space-lock and io_uring programs, and its five BPF LSM hooks,
/// or in the tracepoint mode the thirteen per-call exits
/// (`watch_32_bit_syscalls = false`) or one raw `sys_exit` (`true`).
fn armed_links(guardian: &Guardian, watch_32_bit: bool) -> usize {
    match (Stop::armed_by(guardian), watch_32_bit) {
        (Stop::Denied, _) => 2 + 5,
        (Stop::Killed, false) => 2 + 13,
        (Stop::Killed, true) => 2 + 1,
    }
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_syscall_tracepoints_are_attached_only_while_something_is_protected() {
    for watch_32_bit in [false, true] {
        let guardian = Guardian::start_with_config(
            &format!("arming-{watch_32_bit}"),
            &format!("watch_32_bit_syscalls = {watch_32_bit}\n"),
        );
        let idle = attached_programs(guardian.pid());
        assert_eq!(guardian.status()["tamper_armed"], false);

        let mut session = Session::start(&guardian);
        put_marker(&mut session, "tok");
        assert_eq!(guardian.status()["tamper_armed"], true);
        let armed = idle + armed_links(&guardian, watch_32_bit);
        assert_eq!(attached_programs(guardian.pid()), armed, "{watch_32_bit}");
        let holder = start_sleeping_holder(&mut session, "tok");

        // Armed again, an attack on the holder is stopped as before.
        let loot = session.dir().join("loot");
        let output = attack("readv", holder, &loot, false);
        Stop::armed_by(&guardian).assert_stopped_at(&output, "readv returned");

        // The tamper response wiped tok and killed its holder, but the
        // session stays guarded while its leader lives (issue 27). Once it
        // has exited, nothing is left to protect, so every syscall on the
        // machine gets its fast path back.
        assert!(wait_until(Duration::from_secs(5), || !is_alive(holder)));
        assert_eq!(guardian.status()["tamper_armed"], true);
        session.type_line("exit");
        let disarmed = wait_until(Duration::from_secs(5), || {
            guardian.status()["tamper_armed"] == false
        });
        assert!(disarmed, "{}", guardian.status());
        assert_eq!(attached_programs(guardian.pid()), idle);
    }
}
