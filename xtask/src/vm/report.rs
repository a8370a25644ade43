//! Reading what the guest wrote: the kernel's facts, each test's outcome
//! from its libtest output, and the report at the end.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;

use super::{Test, guest, seconds};

/// How one test ended.
#[derive(PartialEq)]
enum Verdict {
    Passed,
    Failed,
    /// Stopped by the guest's time limit (`timeout` exits 124).
    TimedOut,
    /// Exited without libtest's `test NAME ... ok|FAILED` line.
    NoResult(i32),
}

/// One finished test: its verdict and how long it took.
struct Outcome {
    verdict: Verdict,
    took: Duration,
}

/// The outcome of `tests[index]`, once its status file is written.
fn outcome(out: &Path, index: usize, test: &Test) -> Option<Outcome> {
    let status = fs::read_to_string(out.join(format!("test-{index}.status"))).ok()?;
    let mut fields = status
        .split_whitespace()
        .map(|f| f.parse::<i64>().unwrap_or(-1));
    let code = fields.next().unwrap_or(-1);
    let millis = fields.next().unwrap_or(0);
    let log = log_of(out, index);
    let line = |result: &str| format!("test {} ... {result}", test.name);
    let verdict = if log.lines().any(|l| l == line("ok")) {
        Verdict::Passed
    } else if log.lines().any(|l| l == line("FAILED")) {
        Verdict::Failed
    } else if code == 124 {
        Verdict::TimedOut
    } else {
        Verdict::NoResult(code as i32)
    };
    Some(Outcome {
        verdict,
        took: Duration::from_millis(millis.max(0) as u64),
    })
}

fn log_of(out: &Path, index: usize) -> String {
    fs::read_to_string(out.join(format!("test-{index}.log"))).unwrap_or_default()
}

/// What is printed while the machine runs: the guest's facts once it is
/// up, then each test as it ends.
#[derive(Default)]
pub struct Progress {
    booted: bool,
    shown: usize,
}

impl Progress {
    /// Prints whatever the guest has written since the last call.
    pub fn show(&mut self, out: &Path, tests: &[Test], started: Instant) {
        if !self.booted && out.join(guest::BOOTED).exists() {
            self.booted = true;
            eprintln!("xtask: up after {}", seconds(started.elapsed()));
            for fact in facts(out) {
                eprintln!("xtask:   {fact}");
            }
        }
        while let Some(test) = tests.get(self.shown) {
            let Some(outcome) = outcome(out, self.shown, test) else {
                break;
            };
            eprintln!(
                "xtask: {:<9} {:>7}  {}",
                describe(&outcome.verdict),
                seconds(outcome.took),
                test.id
            );
            self.shown += 1;
        }
    }
}

/// The kernel's release and LSMs, what was mounted in the guest, and the
/// guardian's own view of its protections there.
fn facts(out: &Path) -> Vec<String> {
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let mut facts = vec![
        format!("kernel: {}", read("kernel").trim()),
        format!("lsm: {}", read("lsm").trim()),
        format!("guest uptime at setup: {} s", read("uptime").trim()),
    ];
    for mount in read("mounted").lines() {
        facts.push(format!("mounted in the guest: {mount}"));
    }
    // The `status` lines that differ between kernels.
    let status = read("status");
    let wanted = [
        "watch mode",
        "tamper protection",
        "BPF LSM unused",
        "early kill",
    ];
    facts.extend(
        status
            .lines()
            .filter(|line| wanted.iter().any(|w| line.starts_with(w)))
            .map(str::to_owned),
    );
    if !status.contains("tamper protection") {
        let log = read("guardian.log");
        let first = log.lines().next().unwrap_or("(its log is empty)");
        facts.push(format!("a guardian gave no status: {first}"));
    }
    facts
}

fn describe(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Passed => "ok".to_owned(),
        Verdict::Failed => "FAILED".to_owned(),
        Verdict::TimedOut => "TIMED OUT".to_owned(),
        Verdict::NoResult(code) => format!("EXIT {code}"),
    }
}

/// Prints each failed test's own output (libtest's section for it) and a
/// closing count; fails if any test did not pass.
pub fn summarize(
    label: &str,
    out: &Path,
    tests: &[Test],
    took: Duration,
    machine: &guest::Machine,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for (index, test) in tests.iter().enumerate() {
        let passed = outcome(out, index, test).is_some_and(|o| o.verdict == Verdict::Passed);
        if !passed {
            eprintln!("\n---- {} (test-{index}.log) ----", test.id);
            eprintln!("{}", failure_section(&log_of(out, index), &test.name));
            for (name, tail) in leftover_guardian_logs(out, index) {
                eprintln!("-- the end of {name}, left by the stopped test:\n{tail}");
            }
            failed.push(test.id.as_str());
        }
    }
    let release = fs::read_to_string(out.join("kernel")).unwrap_or_default();
    let cmdline = machine.cmdline.as_deref().unwrap_or("none");
    eprintln!(
        "\nxtask: {label} ({}) under {}, extra kernel arguments: {cmdline}; boot and run took {}",
        release.trim(),
        if machine.kvm { "KVM" } else { "TCG" },
        seconds(took)
    );
    eprintln!(
        "{} passed, {} failed",
        tests.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("failed in the VM: {}", failed.join(", "));
    }
    Ok(())
}

/// libtest's captured output of the failed test `name` (between its
/// `---- NAME stdout ----` line and the closing `failures:`), or, when
/// there is none, the log's last lines.
fn failure_section(log: &str, name: &str) -> String {
    let header = format!("---- {name} stdout ----");
    let lines: Vec<&str> = log.lines().collect();
    let section: Vec<&str> = match lines.iter().position(|l| *l == header) {
        Some(start) => lines[start + 1..]
            .iter()
            .take_while(|l| **l != "failures:")
            .copied()
            .collect(),
        None => lines[lines.len().saturating_sub(20)..].to_vec(),
    };
    if section.len() > SECTION_LINES {
        let more = section.len() - SECTION_LINES;
        return format!(
            "{}\n... ({more} more lines)",
            section[..SECTION_LINES].join("\n")
        );
    }
    section.join("\n").trim_end().to_owned()
}

/// The last lines of each guardian log a timed-out test left
/// (`test-N.DIR.guardian.log`), with the file's name.
fn leftover_guardian_logs(out: &Path, index: usize) -> Vec<(String, String)> {
    let prefix = format!("test-{index}.");
    let Ok(entries) = fs::read_dir(out) else {
        return Vec::new();
    };
    let mut logs: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix) && name.ends_with(".guardian.log"))
        .map(|name| {
            let text = fs::read_to_string(out.join(&name)).unwrap_or_default();
            let lines = without_repeats(&text);
            let tail = lines[lines.len().saturating_sub(LEFTOVER_LINES)..].join("\n");
            (name, tail)
        })
        .collect();
    logs.sort();
    logs
}

/// The lines of a log but those that only repeat the one before with
/// another timestamp (without a system bus, the guardian says every 5 s
/// that it tries logind again, which would fill any tail).
fn without_repeats(log: &str) -> Vec<&str> {
    fn message(line: &str) -> &str {
        line.split_once(' ').map_or(line, |(_, rest)| rest)
    }
    let mut kept: Vec<&str> = Vec::new();
    for line in log.lines() {
        if kept
            .last()
            .is_none_or(|last| message(last) != message(line))
        {
            kept.push(line);
        }
    }
    kept
}

/// The most lines shown of a guardian log a timed-out test left.
const LEFTOVER_LINES: usize = 15;

/// The most lines of a failure's output shown (a guardian's whole log may
/// be in it); the log file has the rest.
const SECTION_LINES: usize = 60;
