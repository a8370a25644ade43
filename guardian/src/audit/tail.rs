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

/// One line for a person.
pub fn human(record: &Value) -> String {
    let text = |key: &str| record[key].as_str().unwrap_or("").to_owned();
    let mut line = format!(
        "{} #{} {} {}",
        text("time"),
        record["seq"],
        text("action"),
        text("outcome")
    );
    if let Some(names) = record["names"].as_array() {
        let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
        line.push_str(&format!(" [{}]", names.join(",")));
    }
    let peer = &record["peer"];
    if peer.is_object() {
        line.push_str(&format!(
            " uid={} pid={} comm={} exe={}",
            peer["uid"],
            peer["pid"],
            peer["comm"].as_str().unwrap_or(""),
            peer["exe"].as_str().unwrap_or("")
        ));
    }
    if record["leader"].is_number() {
        line.push_str(&format!(" leader={}", record["leader"]));
    }
    if let Some(reason) = record["reason"].as_str() {
        line.push_str(&format!(" ({reason})"));
    }
    let latency = &record["latency"];
    if latency.is_object() {
        line.push_str(&format!(
            " wiped in {} ns, holders dead in {} ns, {} holder(s)",
            latency["wiped_ns"], latency["holders_dead_ns"], latency["holders"]
        ));
    }
    line
}

/// Prints the matching records of `files` (oldest first).
pub fn print(files: &[PathBuf], filter: &Filter, out: &mut impl Write) -> io::Result<()> {
    for file in files {
        let reader = BufReader::new(super::open_to_read(file)?);
        for line in reader.lines() {
            emit(&line?, filter, out)?;
        }
    }
    Ok(())
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
    let Ok(record) = serde_json::from_str::<Value>(line) else {
        return writeln!(out, "(unreadable record: {} bytes)", line.len());
    };
    if !filter.accepts(&record) {
        return Ok(());
    }
    if filter.json {
        writeln!(out, "{line}")
    } else {
        writeln!(out, "{}", human(&record))
    }
}
