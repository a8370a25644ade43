//! The checks judged from facts made up here, and the report from a host
//! tree in a temporary directory.

use std::{fs, path::PathBuf};

use super::{
    checks::{self, Guardian, Verdict},
    host::{Facts, LsmSource},
    parse::{CorePattern, KernelVersion, Procps},
    *,
};
use crate::os::peer::Pinning;
use crate::protocol::{
    Containment, FailClosed, ForkTracking, ReadPaths, StatusInfo, TamperLimit, TamperProtection,
    WatchMode,
};

fn list(text: &str) -> Vec<String> {
    text.split(',').map(str::to_owned).collect()
}

/// A Debian 12 host as installed: no bpf in its LSMs, though built with it.
fn debian() -> Facts {
    Facts {
        lsms: Some((
            list("lockdown,capability,landlock,yama,apparmor"),
            LsmSource::SecurityFs,
        )),
        bpf_lsm_config: Some((PathBuf::from("/boot/config-6.1.0-57-amd64"), "y".to_owned())),
        release: Some("6.1.0-57-amd64".to_owned()),
        version: Some(KernelVersion::new(6, 1)),
        io_uring_disabled: None,
        ptrace_scope: Some(0),
        core_pattern: Some(CorePattern::Piped(
            "/usr/lib/systemd/systemd-coredump".to_owned(),
        )),
        legacy_tiocsti: None,
        procps: Some(Some(Procps {
            flavour: "procps-ng".to_owned(),
            version: vec![4, 0, 2],
        })),
    }
}

/// A newer host with everything in place.
fn strong() -> Facts {
    Facts {
        lsms: Some((
            list("lockdown,capability,landlock,yama,bpf"),
            LsmSource::SecurityFs,
        )),
        version: Some(KernelVersion::new(6, 13)),
        release: Some("6.13.2".to_owned()),
        io_uring_disabled: Some(2),
        ptrace_scope: Some(1),
        core_pattern: Some(CorePattern::File("core".to_owned())),
        legacy_tiocsti: Some(0),
        ..debian()
    }
}

fn running(protection: TamperProtection) -> Guardian {
    let ebpf = protection != TamperProtection::None;
    Guardian::Running(Box::new(StatusInfo {
        pid: 42,
        version: "0.1.0".to_owned(),
        uptime_secs: 1,
        socket: "/run/ns.sock".to_owned(),
        audit_log: "/var/log/ns.jsonl".to_owned(),
        watch_mode: match ebpf {
            true => WatchMode::EbpfTracepoints,
            false => WatchMode::PidfdFallback,
        },
        ebpf_error: (!ebpf).then(|| "disabled by --no-ebpf".to_owned()),
        fork_tracking: ForkTracking::Ebpf,
        containment: Containment::Cgroup,
        fail_closed: FailClosed::Supervisor,
        tamper_protection: protection,
        lsm_error: (protection == TamperProtection::EbpfTracepoints)
            .then(|| "bpf is not in the active LSM list".to_owned()),
        early_kill_error: Some(
            "this kernel has no kfunc bpf_send_signal_task (Linux 6.13+)".to_owned(),
        ),
        lock_watch_error: None,
        read_paths: ReadPaths {
            stopped: match ebpf {
                true => vec!["io_uring: an open returning a descriptor".to_owned()],
                false => Vec::new(),
            },
            open: Vec::new(),
        },
        tamper_armed: false,
        memory_backend: crate::os::secret_mem::Backing::Mlock,
        client_pinning: Pinning::PeerPidfd,
        locked_bytes: 0,
        secrets: 0,
        leaders: 0,
        holders: 0,
        dropped_events: 0,
        holder_events_lost: 0,
        tamper_limit: TamperLimit {
            records_per_uid_per_second: 16,
            suppressed: 0,
            lost: 0,
        },
        audit_flushes: None,
        hardening: crate::os::hardening::Protections::default(),
    }))
}

fn not_running() -> Guardian {
    Guardian::NotReached("cannot reach the guardian at /run/x.sock".to_owned())
}

#[test]
fn bpf_missing_from_the_lsm_list_gets_the_list_with_bpf_appended() {
    let check = checks::bpf_lsm(&debian(), &not_running());
    assert_eq!(check.verdict, Verdict::Missing);
    assert!(
        check
            .found
            .contains("lockdown,capability,landlock,yama,apparmor"),
        "{check:?}"
    );
    let fix = check.fix.join("\n");
    let wanted = "lsm=lockdown,capability,landlock,yama,apparmor,bpf";
    assert!(
        fix.contains("CONFIG_BPF_LSM=y (/boot/config-6.1.0-57-amd64)"),
        "{fix}"
    );
    assert!(fix.contains(&format!(
        "add {wanted} to GRUB_CMDLINE_LINUX in /etc/default/grub"
    )));
    assert!(fix.contains("update-grub"), "{fix}");
    assert!(
        fix.contains(&format!("grubby --update-kernel=ALL --args={wanted}")),
        "{fix}"
    );
}

#[test]
fn bpf_lsm_fix_follows_the_kernel_config() {
    let without = Facts {
        bpf_lsm_config: Some((PathBuf::from("/boot/config-x"), "n".to_owned())),
        ..debian()
    };
    let check = checks::bpf_lsm(&without, &not_running());
    assert!(
        check.fix.join(" ").contains("built without CONFIG_BPF_LSM"),
        "{check:?}"
    );
    let unknown = Facts {
        bpf_lsm_config: None,
        ..debian()
    };
    let check = checks::bpf_lsm(&unknown, &not_running());
    assert!(check.fix[0].starts_with("if this kernel is built with CONFIG_BPF_LSM=y"));
    assert!(check.fix[0].contains("/boot/config-6.1.0-57-amd64"));
}

#[test]
fn bpf_lsm_says_which_source_it_read() {
    assert_eq!(
        checks::bpf_lsm(&strong(), &not_running()).verdict,
        Verdict::Ok
    );
    // bpf in the list, yet the guardian's programs refused: weaker, and why.
    let refused = checks::bpf_lsm(&strong(), &running(TamperProtection::EbpfTracepoints));
    assert_eq!(refused.verdict, Verdict::Weaker);
    assert!(
        refused.found.contains("did not load: bpf is not in"),
        "{refused:?}"
    );
    let from_cmdline = Facts {
        lsms: Some((list("landlock,bpf"), LsmSource::Cmdline)),
        ..debian()
    };
    let check = checks::bpf_lsm(&from_cmdline, &not_running());
    assert_eq!(check.verdict, Verdict::Ok);
    assert!(check.found.contains("/proc/cmdline"), "{check:?}");
    let unknown = Facts {
        lsms: None,
        ..debian()
    };
    assert_eq!(
        checks::bpf_lsm(&unknown, &not_running()).verdict,
        Verdict::Weaker
    );
}

#[test]
fn syscall_tables_are_all_seen_by_bpf_lsm_or_the_raw_tracepoint() {
    let tables = |guardian| checks::syscall_tables(&debian(), &guardian);
    let check = tables(running(TamperProtection::BpfLsmTracepoints));
    let said = (check.verdict, check.found.as_str(), check.fix.len());
    assert_eq!(
        said,
        (Verdict::Ok, "BPF LSM hooks see every system-call table", 0)
    );
    let check = tables(running(TamperProtection::EbpfTracepoints));
    let said = (check.verdict, check.found.as_str());
    assert_eq!(
        said,
        (
            Verdict::Ok,
            "every table watched (watch_32_bit_syscalls = true)"
        )
    );

    // The kernel's layout unread: nothing is judged, whatever the tables.
    let unarmed = match running(TamperProtection::EbpfTracepoints) {
        Guardian::Running(mut status) => {
            status.read_paths.stopped.clear();
            Guardian::Running(status)
        }
        other => other,
    };
    assert!(tables(unarmed).found.starts_with("no table watched"));

    // The 64-bit table only: status names the other tables among the open paths.
    let native = match running(TamperProtection::EbpfTracepoints) {
        Guardian::Running(mut status) => {
            let open = "32-bit and x32 system calls (int 0x80): ... are not seen; set ...";
            status.read_paths.open.push(open.to_owned());
            Guardian::Running(status)
        }
        other => other,
    };
    let check = tables(native);
    assert_eq!(check.verdict, Verdict::Weaker);
    let only = "the running guardian watches the 64-bit table only (watch_32_bit_syscalls = false)";
    assert!(check.found.starts_with(only), "{check:?}");
    assert!(check.found.contains("pidfd_getfd") && check.found.contains("address-space lock"));
    assert!(
        check.fix.len() == 2 && check.fix[0].contains("bpf-lsm"),
        "{check:?}"
    );
    let set = "watch_32_bit_syscalls = true in /etc/ningen-shikkaku/config.toml";
    assert!(check.fix[1].contains(set) && check.fix[1].contains("a quarter"));

    let check = tables(running(TamperProtection::None));
    assert_eq!(check.verdict, Verdict::Weaker);
    assert!(check.found.starts_with("no table watched") && check.found.contains("--no-ebpf"));
    assert!(check.fix[0].contains("eBPF"), "{check:?}");
}

#[test]
fn syscall_tables_without_a_guardian_follow_the_lsm_list() {
    let check = checks::syscall_tables(&strong(), &not_running());
    assert!(check.verdict == Verdict::Ok && check.found.starts_with("possible"));
    let check = checks::syscall_tables(&debian(), &not_running());
    assert_eq!(check.verdict, Verdict::Weaker);
    assert!(check.found.starts_with("bpf is not in the active LSM list"));
    assert!(check.found.contains("unless watch_32_bit_syscalls = true"));
    assert_eq!(check.fix.len(), 2, "{check:?}");
    let unknown = Facts {
        lsms: None,
        ..debian()
    };
    let check = checks::syscall_tables(&unknown, &not_running());
    assert!(
        check.verdict == Verdict::Weaker && check.found.starts_with("BPF LSM may not be active")
    );
}

#[test]
fn an_old_kernel_means_the_fallbacks() {
    let old = debian();
    assert_eq!(checks::kernel(&old).verdict, Verdict::Weaker);
    let peer = checks::peer_pidfd(&old, &not_running());
    assert!(peer.verdict == Verdict::Weaker && peer.found.contains("SO_PEERCRED"));
    let early = checks::early_kill(&old, &not_running());
    assert!(early.verdict == Verdict::Weaker && early.fix[0].contains("6.13"));
    let early = checks::early_kill(&old, &running(TamperProtection::EbpfTracepoints));
    assert!(
        early.found.contains("no kfunc bpf_send_signal_task"),
        "{early:?}"
    );

    let new = strong();
    assert_eq!(checks::kernel(&new).verdict, Verdict::Ok);
    assert_eq!(
        checks::peer_pidfd(&new, &not_running()).verdict,
        Verdict::Ok
    );
    // A running guardian's own answer outranks the version.
    let pinned = |pinning| match running(TamperProtection::BpfLsmTracepoints) {
        Guardian::Running(mut status) => {
            status.client_pinning = pinning;
            Guardian::Running(status)
        }
        other => other,
    };
    let fallback = checks::peer_pidfd(&new, &pinned(Pinning::PidfdAtAccept));
    assert!(fallback.verdict == Verdict::Weaker && fallback.found.contains("SO_PEERCRED"));
    assert_eq!(
        checks::peer_pidfd(&old, &pinned(Pinning::PeerPidfd)).verdict,
        Verdict::Ok
    );
    assert_eq!(
        checks::early_kill(&new, &not_running()).verdict,
        Verdict::Ok
    );
}

#[test]
fn io_uring_is_weaker_unless_disabled_or_stopped_by_the_guardian() {
    let check = checks::io_uring(&debian(), &not_running());
    assert!(check.verdict == Verdict::Weaker && check.found.contains("older than 6.6"));
    let open = Facts {
        io_uring_disabled: Some(0),
        ..debian()
    };
    let check = checks::io_uring(&open, &not_running());
    assert!(
        check.fix[0].contains("kernel.io_uring_disabled=2"),
        "{check:?}"
    );
    let check = checks::io_uring(&open, &running(TamperProtection::BpfLsmTracepoints));
    assert!(
        check.verdict == Verdict::Ok && check.fix.is_empty(),
        "{check:?}"
    );
    assert_eq!(
        checks::io_uring(&open, &running(TamperProtection::None)).verdict,
        Verdict::Weaker
    );
    assert_eq!(
        checks::io_uring(&strong(), &not_running()).verdict,
        Verdict::Ok
    );
}

#[test]
fn ptrace_scope_zero_is_weaker_and_no_yama_is_missing() {
    assert_eq!(checks::ptrace_scope(&debian()).verdict, Verdict::Weaker);
    assert_eq!(checks::ptrace_scope(&strong()).verdict, Verdict::Ok);
    let no_yama = Facts {
        ptrace_scope: None,
        ..debian()
    };
    let check = checks::ptrace_scope(&no_yama);
    assert!(check.verdict == Verdict::Missing && check.fix[0].contains("yama"));
}

#[test]
fn a_piped_core_pattern_is_ok_with_the_guardians_ebpf() {
    let piped = debian();
    let check = checks::core_pattern(&piped, &running(TamperProtection::EbpfTracepoints));
    assert_eq!(check.verdict, Verdict::Ok);
    assert!(
        check
            .found
            .contains("piped to /usr/lib/systemd/systemd-coredump")
    );
    assert!(check.found.contains("core limit of 1"));
    let check = checks::core_pattern(&piped, &running(TamperProtection::None));
    assert!(check.verdict == Verdict::Weaker && check.found.contains("lower"));
    assert_eq!(
        checks::core_pattern(&piped, &not_running()).verdict,
        Verdict::Weaker
    );
    assert_eq!(
        checks::core_pattern(&strong(), &not_running()).verdict,
        Verdict::Ok
    );
}

#[test]
fn tiocsti_allowed_is_weaker() {
    let check = checks::tiocsti(&debian());
    assert!(check.verdict == Verdict::Weaker && check.found.contains("older than 6.2"));
    let legacy = Facts {
        legacy_tiocsti: Some(1),
        ..strong()
    };
    let check = checks::tiocsti(&legacy);
    assert!(check.verdict == Verdict::Weaker && check.fix[0].contains("legacy_tiocsti=0"));
    assert_eq!(checks::tiocsti(&strong()).verdict, Verdict::Ok);
}

#[test]
fn procps_4_0_is_explained_by_the_guardians_mode() {
    let facts = debian();
    let check = checks::procps(&facts, &running(TamperProtection::BpfLsmTracepoints));
    assert!(
        check
            .found
            .contains("procps-ng 4.0.2 reads every process's /proc/PID/environ")
    );
    assert!(check.found.contains("denied (EACCES)"), "{check:?}");
    let check = checks::procps(&facts, &running(TamperProtection::EbpfTracepoints));
    assert!(check.found.contains("SIGKILL"), "{check:?}");
    let check = checks::procps(&facts, &running(TamperProtection::None));
    assert_eq!(check.verdict, Verdict::Weaker);
    let newer = Facts {
        procps: Some(Some(Procps {
            flavour: "procps-ng".to_owned(),
            version: vec![4, 1, 0],
        })),
        ..facts
    };
    assert!(
        checks::procps(&newer, &not_running())
            .found
            .contains("only when asked")
    );
}

#[test]
fn only_a_guardian_in_the_bpf_lsm_mode_is_the_strongest() {
    let strongest = running(TamperProtection::BpfLsmTracepoints);
    assert!(strongest.is_strongest());
    assert_eq!(checks::guardian(&debian(), &strongest).verdict, Verdict::Ok);
    for weaker in [
        running(TamperProtection::EbpfTracepoints),
        running(TamperProtection::None),
        not_running(),
    ] {
        assert!(!weaker.is_strongest());
        assert_ne!(checks::guardian(&debian(), &weaker).verdict, Verdict::Ok);
    }
    let check = checks::guardian(&debian(), &running(TamperProtection::EbpfTracepoints));
    assert!(
        check.found.contains("bpf is not in the active LSM list"),
        "{check:?}"
    );
    let refused = checks::guardian(&strong(), &running(TamperProtection::EbpfTracepoints));
    assert!(refused.fix[0].contains("refused"), "{refused:?}");
    assert!(check.fix[0].starts_with("make BPF LSM active"), "{check:?}");
    let check = checks::guardian(&debian(), &not_running());
    assert!(check.verdict == Verdict::Missing && check.found.starts_with("not reached: "));
}

#[test]
fn the_report_reads_a_host_tree_and_has_one_line_per_check() {
    let dir = std::env::temp_dir().join(format!("ns-doctor-report-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    for (path, text) in [
        ("proc/sys/kernel/osrelease", "6.12.118+deb12-amd64\n"),
        ("proc/cmdline", "BOOT_IMAGE=/vmlinuz quiet"),
        (
            "sys/kernel/security/lsm",
            "lockdown,capability,landlock,yama,apparmor",
        ),
        ("boot/config-6.12.118+deb12-amd64", "CONFIG_BPF_LSM=y\n"),
        ("proc/sys/kernel/io_uring_disabled", "0\n"),
        ("proc/sys/kernel/yama/ptrace_scope", "1\n"),
        ("proc/sys/kernel/core_pattern", "core\n"),
        ("proc/sys/dev/tty/legacy_tiocsti", "0\n"),
    ] {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let host = Host::at(&dir, &dir.join("no-ps"));
    let report = Report::of(&host, &not_running());
    assert!(!report.strongest);
    let text = report.text();
    let names = [
        "bpf-lsm",
        "syscall-tables",
        "kernel",
        "peer-pidfd",
        "early-kill",
        "io-uring",
        "ptrace-scope",
        "core-pattern",
        "tiocsti",
        "procps",
        "guardian",
    ];
    let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with(' ')).collect();
    for (line, name) in lines.iter().zip(names) {
        let words: Vec<&str> = line.split_whitespace().take(2).collect();
        assert!(["ok", "weaker", "missing"].contains(&words[0]), "{line}");
        assert_eq!(words[1], name, "{text}");
    }
    assert!(
        text.starts_with("missing bpf-lsm         not active"),
        "{text}"
    );
    assert!(
        text.contains("fix: Fedora: grubby --update-kernel=ALL --args=lsm=lockdown,capability,landlock,yama,apparmor,bpf, reboot"),
        "{text}"
    );
    assert!(
        text.contains("weaker  kernel          6.12.118+deb12-amd64"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(json["strongest"], false);
    assert_eq!(json["checks"].as_array().unwrap().len(), names.len());
    assert_eq!(json["checks"][0]["name"], "bpf-lsm");
    assert_eq!(json["checks"][0]["verdict"], "missing");
    fs::remove_dir_all(dir).unwrap();
}
