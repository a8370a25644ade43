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
    loop {
        offset += show_new(&file, offset, filter, out)?;
        out.flush()?;
        thread::sleep(Duration::from_millis(200));
        let Ok(current) = super::open_to_read(path) else {
            continue;
        };
        let (old, new) = (file.metadata()?.ino(), current.metadata()?.ino());
        if old == new {
            continue;
        }
        // Written before the file was renamed, so complete now.
        show_new(&file, offset, filter, out)?;
        for between in rotated_between(path, old, new) {
            show_new(&super::open_to_read(&between)?, 0, filter, out)?;
        }
        (file, offset) = (current, 0);
    }
}

/// The files rotated after the one with inode `old` and before the one with
/// inode `new`, oldest first: what a reader of `old` missed when the log
/// rotated more than once since it last looked. Where `old` is gone (deleted
/// past `audit_keep_files`), every rotated file is newer than it.
fn rotated_between(path: &Path, old: u64, new: u64) -> Vec<PathBuf> {
    let rotated = super::rotated_files(path);
    let inode = |file: &PathBuf| std::fs::symlink_metadata(file).map(|meta| meta.ino()).ok();
    let start = rotated
        .iter()
        .position(|file| inode(file) == Some(old))
        .map_or(0, |at| at + 1);
    rotated[start..]
        .iter()
        .take_while(|file| inode(file) != Some(new))
        .cloned()
        .collect()
}

/// Shows the whole records written to `file` past `offset`; returns the
/// bytes they take. A record still being written is left for the next look
/// (and a fragment a crash left, for the guardian to cut and record).
fn show_new(file: &File, offset: u64, filter: &Filter, out: &mut impl Write) -> io::Result<u64> {
    let bytes = read_from(file, offset)?;
    let whole = whole_lines(super::written(&bytes));
    for line in String::from_utf8_lossy(whole).lines() {
        emit(line, filter, out)?;
    }
    Ok(whole.len() as u64)
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
    use crate::audit::{Action, AuditLog, Entry, Rotation, tests::scratch};

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
        /// The `seq` of each line once there are `count` of them, or after
        /// five seconds.
        fn seqs_once(&self, count: usize) -> Vec<u64> {
            for _ in 0..50 {
                if self.seqs().len() >= count {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            self.seqs()
        }

        fn seqs(&self) -> Vec<u64> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                // 0 for a line that is not a record (an unreadable one).
                .map(|line| {
                    serde_json::from_str::<Value>(line)
                        .map_or(0, |record| record["seq"].as_u64().unwrap_or(0))
                })
                .collect()
        }
    }

    /// `audit tail -f --json` of `path` in a thread, with `meanwhile` done
    /// between the listing and the following.
    fn follow_in_a_thread(path: &Path, meanwhile: impl FnOnce()) -> Printed {
        let (printed, path) = (Printed::default(), path.to_owned());
        let json = Filter {
            json: true,
            ..Filter::default()
        };
        let mut out = printed.clone();
        let from = print(std::slice::from_ref(&path), &json, &mut out).unwrap();
        meanwhile();
        std::thread::spawn(move || follow(&path, from, &json, &mut out));
        printed
    }

    #[test]
    fn follow_prints_every_record_once_across_rotations_however_fast_and_stops_at_the_zero_room() {
        let path = scratch("follow");
        // About three records a file.
        let rotation = Rotation {
            max_bytes: 600,
            keep_files: usize::MAX,
        };
        let mut log = AuditLog::open(&path, rotation).unwrap();
        let status = Entry::notice(Action::Status, "r".to_owned());
        log.append(&status).unwrap();
        let printed = follow_in_a_thread(&path, || log.append(&status).unwrap());
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
        assert_eq!(printed.seqs_once(all.len()), all);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn follow_started_on_a_crashed_log_shows_the_record_of_its_torn_tail_not_the_fragment() {
        let path = scratch("follow-torn");
        let status = Entry::notice(Action::Status, "r".to_owned());
        let mut log = AuditLog::open(&path, Rotation::NEVER).unwrap();
        log.append(&status).unwrap();
        log.append(&status).unwrap();
        drop(log);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(br#"{"seq":3,"action":"status","outcome":"deny","rea"#)
            .unwrap();
        let printed = follow_in_a_thread(&path, || ());
        thread::sleep(Duration::from_millis(300));
        // The guardian starts: the fragment is cut, and seq 3 says so.
        let log = AuditLog::open(&path, Rotation::NEVER).unwrap();
        assert_eq!(printed.seqs_once(3), [1, 2, 3]);
        let last = String::from_utf8_lossy(&printed.0.lock().unwrap())
            .lines()
            .last()
            .map(str::to_owned);
        assert!(last.unwrap().contains("audit_torn_tail"));
        drop(log);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
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
