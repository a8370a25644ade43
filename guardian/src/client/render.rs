//! `list` and `status` as a person reads them: aligned columns and labelled
//! lines, durations in the largest two units (`3h 12m`). `list --json`
//! gives absolute times (RFC 3339) instead, for scripts.

#![forbid(unsafe_code)]

use std::{
    fmt::Write,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::protocol::{SecretInfo, StatusInfo};

/// The `list` table: one line per secret, never its value. Each column is
/// as wide as its widest cell, so long names keep the columns straight;
/// with `uids`, root's view of every user, a UID column leads.
pub(super) fn list(secrets: &[SecretInfo], uids: bool) -> String {
    let mut rows = vec![row(["UID", "NAME", "LEADER", "HOLDERS", "AGE", "TTL LEFT"])];
    rows.extend(secrets.iter().map(|secret| {
        let ttl = secret
            .ttl_left_secs
            .map_or_else(|| "none".to_owned(), human_secs);
        [
            secret.uid.to_string(),
            secret.name.clone(),
            secret.leader.to_string(),
            secret.holders.to_string(),
            human_secs(secret.age_secs),
            ttl,
        ]
    }));
    let skip = usize::from(!uids);
    let widths: Vec<usize> = (0..6)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate().skip(skip) {
            let width = widths[column];
            // Names and words left, numbers right.
            let _ = match column {
                1 => write!(line, "{cell:<width$}  "),
                _ => write!(line, "{cell:>width$}  "),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if secrets.is_empty() {
        out.push_str("(no secrets)\n");
    }
    out
}

fn row(cells: [&str; 6]) -> [String; 6] {
    cells.map(str::to_owned)
}

/// One secret in `list --json`.
#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    uid: u32,
    leader: i32,
    holders: usize,
    holder_pids: &'a [i32],
    /// RFC 3339, to the second (null for a clock before the epoch).
    stored_at: Option<String>,
    age_secs: u64,
    /// RFC 3339, or null without a TTL.
    expires_at: Option<String>,
    ttl_left_secs: Option<u64>,
}

/// `list --json`: the answer with absolute times, taken against `now`.
pub(super) fn list_json(secrets: &[SecretInfo], now: SystemTime) -> serde_json::Result<String> {
    // humantime panics on a time before the epoch (a clock set near 1970).
    let at = |time: Option<SystemTime>| {
        time.filter(|&time| time >= SystemTime::UNIX_EPOCH)
            .map(|time| humantime::format_rfc3339_seconds(time).to_string())
    };
    let listed: Vec<Listed<'_>> = secrets
        .iter()
        .map(|secret| Listed {
            name: &secret.name,
            uid: secret.uid,
            leader: secret.leader,
            holders: secret.holders,
            holder_pids: &secret.holder_pids,
            stored_at: at(now.checked_sub(Duration::from_secs(secret.age_secs))),
            age_secs: secret.age_secs,
            expires_at: at(secret
                .ttl_left_secs
                .and_then(|left| now.checked_add(Duration::from_secs(left)))),
            ttl_left_secs: secret.ttl_left_secs,
        })
        .collect();
    serde_json::to_string_pretty(&listed)
}

/// Seconds in the largest two units: `45s`, `6m 40s`, `3h 12m`, `2d 4h`.
pub(super) fn human_secs(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = UNITS.iter().position(|&(size, _)| secs >= size) else {
        return "0s".to_owned();
    };
    let (size, unit) = UNITS[first];
    let mut text = format!("{}{unit}", secs / size);
    if let Some(&(next, next_unit)) = UNITS.get(first + 1) {
        let rest = secs % size / next;
        if rest > 0 {
            let _ = write!(text, " {rest}{next_unit}");
        }
    }
    text
}

/// The `status` report: where the guardian is, which protections are in
/// force, and the counts.
pub(super) fn status(status: &StatusInfo) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{label:<18}{value}");
    };
    line(
        "guardian pid",
        &format!(
            "{} (version {}), up {}",
            status.pid,
            status.version,
            human_secs(status.uptime_secs)
        ),
    );
    line("socket", &status.socket);
    line("audit log", &status.audit_log);
    line("watch mode", &status.watch_mode);
    if let Some(err) = &status.ebpf_error {
        line("eBPF unavailable", err);
    }
    line("fork tracking", &status.fork_tracking);
    line("containment", &status.containment);
    line("fail closed", &status.fail_closed);
    let armed = match status.tamper_armed {
        true => "armed",
        false => "disarmed: nothing to protect",
    };
    line(
        "tamper protection",
        &format!("{} ({armed})", status.tamper_protection),
    );
    if let Some(err) = &status.lsm_error {
        line("BPF LSM unused", err);
    }
    match &status.early_kill_error {
        None => line(
            "early kill",
            &"the kernel kills a leader's newest holder at its exit",
        ),
        Some(err) => line("early kill", &format!("off: {err}")),
    }
    match &status.lock_watch_error {
        None => line(
            "lock, suspend",
            &"watched: logind's lock and sleep signals are triggers",
        ),
        Some(err) => line("lock, suspend", &format!("not watched: {err}")),
    }
    for path in &status.read_paths.stopped {
        line("read path stopped", path);
    }
    for path in &status.read_paths.open {
        line("read path OPEN", path);
    }
    line("memory backend", &status.memory_backend);
    line("client pinning", &status.client_pinning);
    line("locked", &human_bytes(status.locked_bytes as u64));
    line(
        "counts",
        &format!(
            "{} secrets, {} sessions guarded, {} holders; {} events dropped, {} holder events \
             lost",
            status.secrets,
            status.leaders,
            status.holders,
            status.dropped_events,
            status.holder_events_lost
        ),
    );
    let limit = &status.tamper_limit;
    line(
        "tamper records",
        &format!(
            "at most {} per uid per second; {} attempts past it counted, {} records lost",
            limit.records_per_uid_per_second, limit.suppressed, limit.lost
        ),
    );
    if let Some(flushes) = status.audit_flushes {
        let shared = flushes.answers as f64 / flushes.flushes.max(1) as f64;
        line(
            "audit flushes",
            &format!(
                "{} fdatasyncs released {} answers ({shared:.1} each)",
                flushes.flushes, flushes.answers
            ),
        );
    }
    let h = &status.hardening;
    let locked = h
        .locked_kib
        .map_or_else(|| "(root only)".to_owned(), |kib| human_bytes(kib * 1024));
    line(
        "hardening",
        &format!(
            "dumpable {}, core limit {}, no_new_privs {}, mlockall {}, seccomp {} ({} syscalls), \
             VmLck {locked}, open files {}",
            h.dumpable,
            h.core_limit,
            h.no_new_privs,
            h.mlockall,
            h.seccomp,
            h.seccomp_allowed,
            h.open_files_limit
        ),
    );
    out
}

/// Bytes in binary units: `512 B`, `4.0 KiB`, `16.0 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, ttl_left_secs: Option<u64>) -> SecretInfo {
        SecretInfo {
            name: name.to_owned(),
            uid: 1000,
            leader: 4242,
            holders: 2,
            holder_pids: vec![5000, 5001],
            age_secs: 400,
            ttl_left_secs,
        }
    }

    #[test]
    fn durations_take_the_largest_two_units() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(45), "45s");
        assert_eq!(human_secs(400), "6m 40s");
        assert_eq!(human_secs(3_600), "1h");
        assert_eq!(human_secs(11_520), "3h 12m");
        assert_eq!(human_secs(366 * 86_400), "366d");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(16 << 20), "16.0 MiB");
    }

    #[test]
    fn long_names_keep_the_columns_straight() {
        let long = "n".repeat(51);
        let table = list(&[secret(&long, Some(90)), secret("short", None)], false);
        let lines: Vec<&str> = table.lines().collect();
        let leader_end = |line: &str| line.find("4242").map(|at| at + 4);
        assert_eq!(leader_end(lines[1]), leader_end(lines[2]));
        assert!(lines[1].ends_with("1m 30s"), "{table}");
        assert!(lines[2].ends_with("none"), "{table}");
        assert!(!lines[0].contains("UID"));
        assert!(
            list(&[secret("x", None)], true)
                .trim_start()
                .starts_with("UID")
        );
    }

    #[test]
    fn json_gives_absolute_times_and_holder_pids() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let json = list_json(&[secret("tok", Some(60))], now).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[0]["stored_at"], "2027-01-15T07:53:20Z");
        assert_eq!(value[0]["expires_at"], "2027-01-15T08:01:00Z");
        assert_eq!(value[0]["holder_pids"], serde_json::json!([5000, 5001]));
        // A clock near 1970: no time rather than a panic.
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let json = list_json(&[secret("tok", None)], early).unwrap();
        assert!(json.contains("\"stored_at\": null"), "{json}");
    }
}
