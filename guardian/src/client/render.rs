//! `list` and `status` as a person reads them: aligned columns and labelled
//! lines on standard output. (`--json` prints the answer as it came instead.)

#![forbid(unsafe_code)]

use crate::protocol::{SecretInfo, StatusInfo};

/// The `list` table: one line per secret, never its value.
pub(super) fn list(secrets: &[SecretInfo]) {
    println!(
        "{:<24} {:>8} {:>8} {:>10} {:>10}",
        "NAME", "LEADER", "HOLDERS", "AGE", "TTL-LEFT"
    );
    for secret in secrets {
        let ttl = secret
            .ttl_left_secs
            .map_or("-".to_owned(), |secs| format!("{secs}s"));
        let age = format!("{}s", secret.age_secs);
        println!(
            "{:<24} {:>8} {:>8} {:>10} {:>10}",
            secret.name, secret.leader, secret.holders, age, ttl
        );
    }
}

/// The `status` report: which protections are in force, and the counts.
pub(super) fn status(status: &StatusInfo) {
    println!(
        "guardian pid      {} (version {})",
        status.pid, status.version
    );
    println!("watch mode        {}", status.watch_mode);
    if let Some(err) = &status.ebpf_error {
        println!("eBPF unavailable  {err}");
    }
    println!("fork tracking     {}", status.fork_tracking);
    println!("containment       {}", status.containment);
    println!("fail closed       {}", status.fail_closed);
    println!(
        "tamper protection {} ({})",
        status.tamper_protection,
        match status.tamper_armed {
            true => "armed",
            false => "disarmed: nothing to protect",
        }
    );
    if let Some(err) = &status.lsm_error {
        println!("BPF LSM unused    {err}");
    }
    match &status.early_kill_error {
        None => println!("early kill        the kernel kills a leader's newest holder at its exit"),
        Some(err) => println!("early kill        off: {err}"),
    }
    for path in &status.read_paths.stopped {
        println!("read path stopped {path}");
    }
    for path in &status.read_paths.open {
        println!("read path OPEN    {path}");
    }
    println!("memory backend    {}", status.memory_backend);
    println!("locked bytes      {}", status.locked_bytes);
    println!(
        "secrets {}  leaders {}  holders {}  dropped events {}  holder events lost {}",
        status.secrets,
        status.leaders,
        status.holders,
        status.dropped_events,
        status.holder_events_lost
    );
    let limit = &status.tamper_limit;
    println!(
        "tamper records    at most {} per uid per second; {} attempts past it counted, {} records lost",
        limit.records_per_uid_per_second, limit.suppressed, limit.lost
    );
    let h = &status.hardening;
    println!(
        "hardening         dumpable {}  core limit {}  no_new_privs {}  mlockall {}  \
         seccomp {} ({} syscalls)  VmLck {}  open files {}",
        h.dumpable,
        h.core_limit,
        h.no_new_privs,
        h.mlockall,
        h.seccomp,
        h.seccomp_allowed,
        h.locked_kib
            .map_or_else(|| "(root only)".to_owned(), |kib| format!("{kib} kB")),
        h.open_files_limit
    );
}
