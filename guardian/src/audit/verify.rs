//! `ningen-shikkaku audit verify`: walks the chain through every file of the
//! log, oldest first, and names the first record that breaks it.

#![forbid(unsafe_code)]

use std::{fmt, path::PathBuf};

use super::chain::{self, GENESIS};

/// A log whose chain holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// Sequence number of the first record (above 1 when older files are gone).
    pub first_seq: u64,
    /// Sequence number of the last record.
    pub last_seq: u64,
}

/// The first place the chain breaks.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// 1-based line in that file.
    pub line: usize,
    /// The sequence number expected there.
    pub expected_seq: u64,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {} (expected seq {}): {}",
            self.file.display(),
            self.line,
            self.expected_seq,
            self.reason
        )
    }
}

/// Verifies `files` (oldest first) as one chain.
pub fn verify(files: &[PathBuf]) -> Result<Report, Broken> {
    let mut last: Option<(u64, String)> = None;
    let mut report = Report {
        files: files.len(),
        records: 0,
        first_seq: 0,
        last_seq: 0,
    };
    for file in files {
        let bytes = super::read_whole(file).map_err(|err| Broken {
            file: file.clone(),
            line: 0,
            expected_seq: report.last_seq + 1,
            reason: format!("cannot read: {err}"),
        })?;
        let records = super::written(&bytes);
        let mut lines: Vec<&[u8]> = records.split(|&b| b == b'\n').collect();
        // A fragment after the last newline, or anything but zeros after
        // the records: what a crash or a lost page left.
        let fragment = lines.pop().is_some_and(|rest| !rest.is_empty());
        let torn = if bytes[records.len()..].iter().any(|&b| b != 0) {
            Some(
                "torn or lost: data after zeros where records should be (part of the file never \
                 reached the disk: a crash mid-flush, a failed write-back or a damaged disk)",
            )
        } else {
            fragment.then_some("torn last line (a crash mid-write, or a truncated file)")
        };
        for (index, line) in lines.iter().enumerate() {
            let expected_seq = last.as_ref().map_or(1, |(seq, _)| seq + 1);
            let broken = |reason: String| Broken {
                file: file.clone(),
                line: index + 1,
                expected_seq,
                reason,
            };
            let link = chain::open(line).map_err(broken)?;
            match &last {
                Some((seq, hash)) => {
                    if link.seq != seq + 1 {
                        return Err(broken(format!(
                            "sequence jumps from {seq} to {}: records deleted, reordered or inserted",
                            link.seq
                        )));
                    }
                    if &link.prev != hash {
                        return Err(broken(
                            "prev does not match the record before it: a record was removed, \
                             replaced or moved"
                                .to_owned(),
                        ));
                    }
                }
                None if link.seq == 1 && link.prev != GENESIS => {
                    return Err(broken(
                        "the first record does not start the chain".to_owned(),
                    ));
                }
                None => report.first_seq = link.seq,
            }
            report.records += 1;
            report.last_seq = link.seq;
            last = Some((link.seq, link.hash));
        }
        if let Some(torn) = torn {
            return Err(Broken {
                file: file.clone(),
                line: lines.len() + 1,
                expected_seq: report.last_seq + 1,
                reason: torn.to_owned(),
            });
        }
    }
    if report.first_seq == 0 && report.records > 0 {
        report.first_seq = 1;
    }
    Ok(report)
}
