//! `ningen-shikkaku audit tail`: prints the log's records for a person,
//! filtered by kind and uid, optionally following new records as they land.

#![forbid(unsafe_code)]

use std::{
    io::{self, BufRead, BufReader, Seek, SeekFrom, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use serde_json::Value;

/// Which records to show.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only the last this many of the matching records (then any that follow).
    pub last: Option<usize>,
    /// Only records with this `action`.
    pub kind: Option<String>,
    /// Only records whose peer has this uid.
    pub uid: Option<u32>,
    /// Print the JSON lines as they are.
    pub json: bool,
}

impl Filter {
    fn accepts(&self, record: &Value) -> bool {
        self.kind
            .as_ref()
            .is_none_or(|kind| record["action"] == kind.as_str())
            && self.uid.is_none_or(|uid| record["peer"]["uid"] == uid)
    }
}

/// `text` with every control character (a newline, an escape sequence, a
/// bidirectional override) written as an escape, so no field of a record
/// can start a line or restyle the terminal.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                c.escape_unicode().to_string()
            }
            c => c.to_string(),
        })
        .collect()
}

/// A duration in nanoseconds, in the unit a person reads best.
fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{} µs", ns / 1_000),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.1} s", ns as f64 / 1e9),
    }
}

/// One line for a person: every text from the record escaped, no `null`.
pub fn human(record: &Value) -> String {
    let text = |key: &str| plain(record[key].as_str().unwrap_or(""));
    let mut line = format!(
        "{} #{} {} {}",
        text("time"),
        record["seq"],
        text("action"),
        text("outcome")
    );
    if let Some(names) = record["names"].as_array() {
        let names: Vec<String> = names.iter().filter_map(Value::as_str).map(plain).collect();
        line.push_str(&format!(" [{}]", names.join(",")));
    }
    let peer = &record["peer"];
    if peer.is_object() {
        line.push_str(&format!(
            " uid={} pid={} comm={} exe={}",
            peer["uid"],
            peer["pid"],
            plain(peer["comm"].as_str().unwrap_or("")),
            plain(peer["exe"].as_str().unwrap_or(""))
        ));
    }
    if record["leader"].is_number() {
        line.push_str(&format!(" leader={}", record["leader"]));
    }
    if let Some(reason) = record["reason"].as_str() {
        line.push_str(&format!(" ({})", plain(reason)));
    }
    let latency = &record["latency"];
    if let Some(wiped) = latency["wiped_ns"].as_u64() {
        line.push_str(&format!(" wiped in {}", duration(wiped)));
        match latency["holders_dead_ns"].as_u64() {
            Some(dead) => line.push_str(&format!(
                ", {} holder(s) dead in {}",
                latency["holders"],
                duration(dead)
            )),
            None => line.push_str(", no holder seen dead"),
        }
    }
    line
}

/// Prints the matching records of `files` (oldest first), or the last
/// `filter.last` of them.
pub fn print(files: &[PathBuf], filter: &Filter, out: &mut impl Write) -> io::Result<()> {
    let mut shown = std::collections::VecDeque::new();
    for file in files {
        let reader = BufReader::new(super::open_to_read(file)?);
        for line in reader.lines() {
            if let Some(text) = render(&line?, filter) {
                if filter.last.is_some_and(|last| shown.len() == last) {
                    shown.pop_front();
                }
                if filter.last != Some(0) {
                    shown.push_back(text);
                }
            }
        }
    }
    shown
        .into_iter()
        .try_for_each(|text| writeln!(out, "{text}"))
}

/// After [`print`], waits for new records in `path` and prints them, reopening
/// the file when it is rotated. Runs until interrupted.
pub fn follow(path: &Path, filter: &Filter, out: &mut impl Write) -> io::Result<()> {
    let mut file = super::open_to_read(path)?;
    let mut inode = file.metadata()?.ino();
    let mut offset = file.seek(SeekFrom::End(0))?;
    let mut pending = String::new();
    loop {
        let mut reader = BufReader::new(&file);
        reader.seek(SeekFrom::Start(offset))?;
        let mut chunk = String::new();
        while reader.read_line(&mut chunk)? > 0 {
            offset += chunk.len() as u64;
            pending.push_str(&chunk);
            chunk.clear();
            if pending.ends_with('\n') {
                emit(pending.trim_end(), filter, out)?;
                pending.clear();
            }
        }
        out.flush()?;
        thread::sleep(Duration::from_millis(200));
        if let Ok(current) = super::open_to_read(path)
            && current.metadata()?.ino() != inode
        {
            inode = current.metadata()?.ino();
            (file, offset) = (current, 0);
        }
    }
}

fn emit(line: &str, filter: &Filter, out: &mut impl Write) -> io::Result<()> {
    match render(line, filter) {
        Some(text) => writeln!(out, "{text}"),
        None => Ok(()),
    }
}

/// How `line` is shown, if `filter` shows it.
fn render(line: &str, filter: &Filter) -> Option<String> {
    let Ok(record) = serde_json::from_str::<Value>(line) else {
        return Some(format!("(unreadable record: {} bytes)", line.len()));
    };
    filter.accepts(&record).then(|| match filter.json {
        true => line.to_owned(),
        false => human(&record),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_field_can_start_a_line_or_restyle_the_terminal() {
        let record = serde_json::json!({
            "time": "t\n#999999 trigger wiped [prod-db-token]",
            "seq": 1,
            "action": "malformed",
            "outcome": "deny",
            "names": ["a\rb"],
            "peer": {"uid": 1, "pid": 2, "comm": "x\u{1b}[2J", "exe": "/e\u{202e}gpj.exe"},
            "reason": "unknown op `get\n#1 trigger wiped`",
        });
        let line = human(&record);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.contains(r"\u{a}#999999"), "{line}");
        assert!(line.contains(r"\u{202e}"), "{line}");
    }

    #[test]
    fn durations_read_as_durations_and_a_trigger_without_holders_says_so() {
        let record = serde_json::json!({
            "seq": 3, "action": "trigger", "outcome": "wiped",
            "latency": {"start_ns": 1, "wiped_ns": 88_000, "holders_dead_ns": null, "holders": 0},
        });
        let line = human(&record);
        assert!(
            line.ends_with("wiped in 88 µs, no holder seen dead"),
            "{line}"
        );
        assert!(!line.contains("null"), "{line}");
        assert_eq!(duration(1_234_567), "1.2 ms");
    }
}
