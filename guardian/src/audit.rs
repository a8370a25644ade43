//! The audit log: one JSON object per line for every request and every
//! trigger, appended and flushed to disk before the request is answered.
//!
//! Each record carries `prev`, the SHA-256 of the previous line, so a removed,
//! edited or reordered line breaks the chain. The chain continues across
//! restarts: on open, the last line's hash and sequence number are read back.
//! Secret bytes never reach this module; it only sees names.

#![forbid(unsafe_code)]

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
    time::SystemTime,
};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{clock, peer::Peer};

/// The hash a chain starts from.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How a request or trigger ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request was carried out.
    Allow,
    /// The request was refused.
    Deny,
    /// A trigger wiped secrets and every holder is dead.
    Wiped,
    /// A trigger wiped secrets but some holder outlived the wait.
    HoldersSurvived,
}

/// Measured latencies of a trigger, on the kernel's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Trigger to every secret wiped.
    pub wiped_ns: u64,
    /// Trigger to the last holder dead; `None` if there were no holders.
    pub holders_dead_ns: Option<u64>,
    /// Holders killed.
    pub holders: usize,
}

/// What a caller tells the log; sequence, time and chain are added here.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// `put`, `get`, `exec`, `list`, `revoke`, `status`, `trigger`, `malformed`.
    pub action: String,
    /// Secret names involved (none for list and status).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Who asked; absent for kernel triggers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    /// The session leader involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<i32>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why: the error for a denial, the cause for a trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For triggers, what it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

#[derive(Serialize)]
struct Record<'a> {
    seq: u64,
    time: String,
    mono_ns: u64,
    #[serde(flatten)]
    entry: &'a Entry,
    prev: &'a str,
}

/// An open audit log.
pub struct AuditLog {
    file: File,
    seq: u64,
    prev: String,
}

impl AuditLog {
    /// Opens (creating, mode 0600, in a 0700 directory) and resumes the chain.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let (seq, prev) = match File::open(path) {
            Ok(file) => last_link(file)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => (0, GENESIS.to_owned()),
            Err(err) => return Err(err),
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self { file, seq, prev })
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let time = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let record = Record {
            seq: self.seq + 1,
            time,
            mono_ns: clock::now_ns(),
            entry,
            prev: &self.prev,
        };
        let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
        let hash = hex::encode(Sha256::digest(&line));
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.seq += 1;
        self.prev = hash;
        Ok(())
    }
}

/// The sequence number and hash of the last complete line. A torn last line
/// (no newline, from a crash mid-write) is reported and not chained onto.
fn last_link(file: File) -> io::Result<(u64, String)> {
    let mut last: Option<Vec<u8>> = None;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            tracing::warn!(
                "audit log ends in a torn line; the chain continues from the last whole one"
            );
            break;
        }
        line.pop();
        last = Some(line.clone());
    }
    let Some(last) = last else {
        return Ok((0, GENESIS.to_owned()));
    };
    let seq = serde_json::from_slice::<serde_json::Value>(&last)
        .ok()
        .and_then(|value| value.get("seq")?.as_u64())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "last audit record has no seq")
        })?;
    Ok((seq, hex::encode(Sha256::digest(&last))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> Entry {
        Entry {
            action: action.to_owned(),
            names: vec!["n".to_owned()],
            peer: None,
            leader: None,
            outcome: Outcome::Allow,
            reason: None,
            latency: None,
        }
    }

    #[test]
    fn records_chain_across_reopen() {
        let dir = std::env::temp_dir().join(format!("ns-audit-{}", std::process::id()));
        let path = dir.join("audit.jsonl");
        let _ = fs::remove_dir_all(&dir);
        AuditLog::open(&path)
            .unwrap()
            .append(&entry("put"))
            .unwrap();
        AuditLog::open(&path)
            .unwrap()
            .append(&entry("get"))
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["seq"], 2);
        assert_eq!(
            second["prev"],
            hex::encode(Sha256::digest(lines[0].as_bytes()))
        );
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["prev"], GENESIS);
        fs::remove_dir_all(&dir).unwrap();
    }
}
