//! `ningen-shikkaku audit tail`: prints the log's records for a person,
//! filtered by kind and uid, optionally following new records as they land.

#![forbid(unsafe_code)]

use std::{
    fs::File,
    io::{self, Write},
    os::unix::fs::{FileExt, MetadataExt},
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

/// How far [`print`] read the log's live file, for [`follow`] to go on.
pub struct Position {
    file: File,
    offset: u64,
}

/// Prints the matching records of `files` (oldest first, the live file last),
/// or the last `filter.last` of them. A part of a record at the end of the
/// live file is left for [`follow`]: it is being written.
pub fn print(files: &[PathBuf], filter: &Filter, out: &mut impl Write) -> io::Result<Position> {
    let mut shown = std::collections::VecDeque::new();
    let mut position = None;
    for (index, path) in files.iter().enumerate() {
        let file = super::open_to_read(path)?;
        let bytes = read_from(&file, 0)?;
        let mut records = super::written(&bytes);
        if index + 1 == files.len() {
            records = whole_lines(records);
        }
        for line in String::from_utf8_lossy(records).lines() {
            if let Some(text) = render(line, filter) {
                if filter.last.is_some_and(|last| shown.len() == last) {
                    shown.pop_front();
                }
                if filter.last != Some(0) {
                    shown.push_back(text);
                }
            }
        }
        let offset = records.len() as u64;
        position = Some(Position { file, offset });
    }
    shown
        .into_iter()
        .try_for_each(|text| writeln!(out, "{text}"))?;
    position.ok_or_else(|| io::Error::other("no file to read"))
}

/// `records` up to the end of its last newline.
fn whole_lines(records: &[u8]) -> &[u8] {
    let end = records
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    &records[..end]
}

/// After [`print`], waits for new records in `path` and prints them, from
/// where `print` stopped. When the log rotates it shows the rest of the file
/// it was reading and of every file rotated since, then goes on in the new
/// one. Runs until interrupted.
pub fn follow(
    path: &Path,
    from: Position,
    filter: &Filter,
    out: &mut impl Write,
) -> io::Result<()> {
    let Position {
        mut file,
        mut offset,
    } = from;
    let mut pending = Vec::new();
    loop {
        offset += show_new(&file, offset, &mut pending, filter, out)?;
        out.flush()?;
        thread::sleep(Duration::from_millis(200));
        let Ok(current) = super::open_to_read(path) else {
            continue;
        };
        let inode = file.metadata()?.ino();
        if current.metadata()?.ino() == inode {
            continue;
        }
        // Written before the file was renamed, so complete now.
        show_new(&file, offset, &mut pending, filter, out)?;
        for newer in rotated_since(path, inode) {
            pending.clear();
            show_new(&super::open_to_read(&newer)?, 0, &mut pending, filter, out)?;
        }
        pending.clear();
        (file, offset) = (current, 0);
    }
}

/// The files rotated after the one with `inode`, oldest first: those a
/// reader of that file missed if the log rotated more than once since it
/// last looked. None if that file is gone (past `audit_keep_files`).
fn rotated_since(path: &Path, inode: u64) -> Vec<PathBuf> {
    let rotated = super::rotated_files(path);
    let at = rotated
        .iter()
        .position(|file| std::fs::symlink_metadata(file).is_ok_and(|meta| meta.ino() == inode));
    match at {
        Some(at) => rotated[at + 1..].to_vec(),
        None => Vec::new(),
    }
}

/// Shows the whole records written to `file` past `offset`, keeping the
/// start of one still being written in `pending`; returns the bytes read.
fn show_new(
    file: &File,
    offset: u64,
    pending: &mut Vec<u8>,
    filter: &Filter,
    out: &mut impl Write,
) -> io::Result<u64> {
    let bytes = read_from(file, offset)?;
    let new = super::written(&bytes);
    pending.extend_from_slice(new);
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        emit(String::from_utf8_lossy(&line).trim_end(), filter, out)?;
    }
    Ok(new.len() as u64)
}

/// `file` from `offset` up to the end of its records: reads stop at the
/// first block that holds the zero room (or part of a record being written).
fn read_from(file: &File, mut offset: u64) -> io::Result<Vec<u8>> {
    let (mut bytes, mut block) = (Vec::new(), vec![0; 64 * 1024]);
    loop {
        let n = file.read_at(&mut block, offset)?;
        bytes.extend_from_slice(&block[..n]);
        if n == 0 || block[..n].contains(&0) {
            return Ok(bytes);
        }
        offset += n as u64;
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

    /// What `follow` printed so far, shared with the thread that runs it.
    #[derive(Clone, Default)]
    struct Printed(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Printed {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Printed {
        fn seqs(&self) -> Vec<u64> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .map(|line| {
                    serde_json::from_str::<Value>(line).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect()
        }
    }

    #[test]
    fn follow_prints_every_record_once_across_rotations_however_fast_and_stops_at_the_zero_room() {
        use crate::audit::{Action, AuditLog, Entry, Rotation};
        let dir = std::env::temp_dir().join(format!("ns-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        // About three records a file.
        let rotation = Rotation {
            max_bytes: 600,
            keep_files: usize::MAX,
        };
        let mut log = AuditLog::open(&path, rotation).unwrap();
        let status = Entry::notice(Action::Status, "r".to_owned());
        log.append(&status).unwrap();
        let printed = Printed::default();
        let (followed, mut out) = (path.clone(), printed.clone());
        let json = Filter {
            json: true,
            ..Filter::default()
        };
        let from = print(std::slice::from_ref(&path), &json, &mut out).unwrap();
        log.append(&status).unwrap();
        std::thread::spawn(move || follow(&followed, from, &json, &mut out));
        for round in 0..11 {
            log.append(&status).unwrap();
            // Now and then a pause for a poll; in between, several rotations
            // come between two looks.
            if round % 4 == 3 {
                thread::sleep(Duration::from_millis(250));
            }
        }
        assert!(crate::audit::rotated_files(&path).len() >= 3);
        let all = (1..=13).collect::<Vec<u64>>();
        for _ in 0..50 {
            if printed.seqs().len() >= all.len() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(printed.seqs(), all);
        std::fs::remove_dir_all(&dir).unwrap();
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
