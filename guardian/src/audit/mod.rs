//! The audit log: one JSON object per line for every request, every malformed
//! message, every tamper attempt and every trigger, on disk (fdatasync) before
//! the request it describes is answered. Secret bytes never reach this module;
//! it only sees names. The record schema is in docs/AUDIT.md.
//!
//! The log is a hash chain ([`chain`]): each line carries the hash of the one
//! before and its own, so an edited, deleted, reordered or inserted line is
//! found by [`verify`]. The chain continues across restarts (the last line is
//! read back on open) and across rotation (`audit.jsonl` becomes
//! `audit.jsonl.1`, older files shift up, and the new file continues the
//! sequence and the chain). A line torn by a crash mid-write is cut off on open
//! and reported in a record of its own, never silently dropped.
//!
//! Records are written in place into zero-filled room the writer keeps ahead
//! of itself ([`SEGMENT`] at a time), so the fdatasync behind each answer
//! flushes data alone, never the file's new size: the log ends at its first
//! zero byte. Readers stop there ([`written`]); rotation and a clean shutdown
//! cut the room off, and after a crash anything found past the first zero
//! (pages of unanswered records that reached the disk out of order) is a torn
//! tail like any other.
//!
//! A write that fails part way (a full disk) is undone at once: the file is
//! cut back to its last whole record, so no record is ever appended to a
//! fragment. What could not be written is counted, and the first record that
//! can be written again is preceded by one that says so. A log found damaged
//! in the middle on open is moved aside whole, and a new file continues the
//! chain from its last sound record, saying what was found.

mod bounds;
pub mod chain;
pub mod commit;
mod files;
mod record;
mod recovery;
pub mod tail;
pub mod verify;
mod writer_lock;

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use files::numbered;
pub use files::{all_files, open_to_read, read_whole, rotated_files, written};
use record::Record;
pub use record::{Action, Entry, Latency, Outcome};
use recovery::{Damage, MAX_DAMAGE_SHOWN, Tail};
use sha2::{Digest, Sha256};
use writer_lock::WriterLock;

use crate::os::{
    clock,
    trusted_path::{Leaf, TrustedDir},
};

/// When the log is rotated, and how many rotated files are kept.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// Size past which the log is rotated.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` to `.N`); older ones are deleted.
    pub keep_files: usize,
}

impl Rotation {
    /// One file that grows for ever.
    pub const NEVER: Self = Self {
        max_bytes: u64::MAX,
        keep_files: usize::MAX,
    };
}

/// Zero-filled room added past the last record at a time: records are then
/// written over zeros, and the fdatasync that makes each durable carries no
/// change of the file's size (measured on this kind of disk: 35 to 50% more
/// flushes a second under concurrent writes, docs/BENCHMARKS.md).
pub const SEGMENT: u64 = 1 << 20;

/// Zeros written at a time to make room.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of whole records: the next one is written here.
    written: u64,
    /// Zeros reach this far past `written` (the file's length, mostly).
    room: u64,
    /// After room could not be made (a full disk), records are appended
    /// without it until the log has grown to here.
    no_room_until: u64,
    rotation: Rotation,
    seq: u64,
    prev: String,
    dirty: bool,
    /// Records lost since the log last took a write, if it has not since.
    gap: Option<Gap>,
    /// A failed write left bytes after the last whole record that could not
    /// be cut off yet: nothing is written until they are.
    fragment: bool,
    /// This guardian's claim on the log.
    _writer: WriterLock,
}

/// What could not be written while the log refused writes.
struct Gap {
    since: SystemTime,
    refused: u64,
    lost: u64,
    error: String,
}

impl AuditLog {
    /// Opens (creating, mode 0600, in a 0700 directory) and resumes the chain;
    /// rotates once the file passes `max_bytes`. No directory on the way and
    /// not the file may be a link or another user's (see [`crate::os::trusted_path`]).
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        let (dir, name) = TrustedDir::of_file(path, Leaf::Private).map_err(io::Error::other)?;
        let writer = WriterLock::take(&dir, &name, path)?;
        let file = dir.open_log(&name).map_err(io::Error::other)?;
        let tail = Tail::read(&file)?;
        let mut log = Self {
            path: path.to_owned(),
            file: Arc::new(file),
            written: tail.whole_len,
            room: tail.zeros_to,
            no_room_until: 0,
            rotation,
            seq: tail.seq,
            prev: tail.prev.clone(),
            dirty: false,
            gap: None,
            fragment: false,
            _writer: writer,
        };
        if !tail.damage.is_empty() {
            // Kept whole for `verify` and for whoever investigates, zeros
            // and all (no room to cut); the new file chains on from the
            // last record that was sound.
            log.room = log.written;
            log.rotate()?;
            tracing::error!(
                damaged = tail.damage.len(),
                "audit log damaged; moved aside and continued in a new file"
            );
            log.append(&Entry::damaged(&tail.damage, &log.path))?;
            return Ok(log);
        }
        if let Some(torn) = tail.torn {
            log.cut_room()?;
            tracing::error!(
                bytes = torn.len(),
                "audit log ended in a torn line; cut off and recorded"
            );
            log.append(&Entry::torn_tail(&torn))?;
        }
        Ok(log)
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        self.write(entry)?;
        self.sync()
    }

    /// Makes every record written so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Appends one record without waiting for the disk; [`AuditLog::sync`]
    /// must follow before anything it describes is answered. A record that
    /// cannot be written leaves no part of itself behind.
    pub fn write(&mut self, entry: &Entry) -> io::Result<()> {
        let written = self.write_gap().and_then(|()| self.write_one(entry));
        if let Err(err) = &written {
            let gap = self.gap.get_or_insert_with(|| Gap {
                since: SystemTime::now(),
                refused: 0,
                lost: 0,
                error: err.to_string(),
            });
            match entry.action.needs_its_record() {
                true => gap.refused += 1,
                false => gap.lost += 1,
            }
        }
        written
    }

    /// Notes what could not be written, once the log takes writes again.
    fn write_gap(&mut self) -> io::Result<()> {
        let Some(gap) = &self.gap else {
            return Ok(());
        };
        let entry = Entry::gap(gap);
        self.write_one(&entry)?;
        self.gap = None;
        Ok(())
    }

    fn write_one(&mut self, entry: &Entry) -> io::Result<()> {
        if self.fragment {
            self.cut_room()?;
            self.fragment = false;
        }
        if self.written >= self.rotation.max_bytes {
            self.rotate()?;
        }
        let time = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let record = Record {
            seq: self.seq + 1,
            time,
            mono_ns: clock::now_ns(),
            entry: &entry.bounded(),
            prev: &self.prev,
        };
        let (line, hash) = chain::seal(serde_json::to_vec(&record).map_err(io::Error::other)?);
        self.make_room(line.len() as u64);
        if let Err(err) = self.file.write_all_at(&line, self.written) {
            // Undo whatever part of it reached the file: the next record
            // must start a line of its own, never continue a fragment.
            self.fragment = self.cut_room().is_err();
            return Err(err);
        }
        self.dirty = true;
        self.written += line.len() as u64;
        self.room = self.room.max(self.written);
        self.seq += 1;
        self.prev = hash;
        Ok(())
    }

    /// Zero-fills another [`SEGMENT`] (less where files rotate sooner) past
    /// the room left when the next `len` bytes would not fit in it. The
    /// zeros reach the disk with the next flush; the records after them are
    /// then written in place. A full disk leaves the record to be appended
    /// as it is, and the next segment's worth of records too before room is
    /// tried again.
    fn make_room(&mut self, len: u64) {
        if self.written + len <= self.room || self.written < self.no_room_until {
            return;
        }
        let segment = self.rotation.max_bytes.min(SEGMENT).next_multiple_of(4096);
        let end = self.room + segment;
        let zeroed = (self.room..end).step_by(ZEROS.len()).try_for_each(|at| {
            let part = (end - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..part], at)
        });
        match zeroed {
            Ok(()) => {
                self.room = end;
                self.dirty = true;
            }
            Err(err) => {
                tracing::warn!(%err, "no room ahead of the audit log; appending");
                // Zeros past the room are the log's end either way; cut
                // them off so the file's length says where it ends.
                let _ = self.cut_room();
                self.no_room_until = self.written + segment;
            }
        }
    }

    /// Cuts the file back to its whole records: the room ahead of them, and
    /// any part of a record a failed write left.
    fn cut_room(&mut self) -> io::Result<()> {
        self.file.set_len(self.written)?;
        self.room = self.written;
        Ok(())
    }

    /// The file records are being written to, for a thread that syncs it.
    pub fn current_file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// The last sequence number written.
    pub fn head(&self) -> u64 {
        self.seq
    }

    /// `audit.jsonl` -> `audit.jsonl.1`, each older `.N` -> `.N+1`, new file;
    /// files past the number kept are deleted, oldest first.
    fn rotate(&mut self) -> io::Result<()> {
        // A rotated file ends at its last record, for any reader.
        if self.room > self.written {
            self.cut_room()?;
        }
        let rotated = rotated_files(&self.path);
        // Oldest first, so each rename goes to a name already moved away.
        for (index, older) in rotated.iter().enumerate() {
            let number = rotated.len() - index + 1;
            match number > self.rotation.keep_files {
                true => fs::remove_file(older)?,
                false => fs::rename(older, numbered(&self.path, number))?,
            }
        }
        fs::rename(&self.path, numbered(&self.path, 1))?;
        // What was written to the old file is durable before the new one starts.
        self.sync()?;
        // The name was just moved away: a new file, never through a link.
        self.file = Arc::new(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&self.path)?,
        );
        (self.written, self.room, self.no_room_until) = (0, 0, 0);
        Ok(())
    }
}

impl Drop for AuditLog {
    /// A log left by a guardian that stopped ends at its last record, for
    /// `jq`, `cat` and the like; one that crashed is read to its first zero.
    fn drop(&mut self) {
        if self.fragment || self.room > self.written {
            let _ = self.cut_room();
        }
    }
}

impl Entry {
    /// A refusal or summary of the guardian's own, with no peer: a summed-up
    /// flood, or something about the log itself.
    pub fn notice(action: Action, reason: String) -> Self {
        Self {
            action,
            names: Vec::new(),
            peer: None,
            leader: None,
            outcome: Outcome::Deny,
            reason: Some(reason),
            latency: None,
        }
    }

    fn gap(gap: &Gap) -> Self {
        let since = humantime::format_rfc3339_micros(gap.since);
        Self::notice(
            Action::AuditGap,
            format!(
                "the log could not be written from {since} until this record ({}): {} \
                 put/get/exec requests were refused for it and {} other records are missing",
                gap.error, gap.refused, gap.lost
            ),
        )
    }

    fn damaged(damage: &[Damage], path: &Path) -> Self {
        let shown: Vec<String> = damage
            .iter()
            .take(MAX_DAMAGE_SHOWN)
            .map(Damage::to_string)
            .collect();
        let more = damage.len().saturating_sub(MAX_DAMAGE_SHOWN);
        Self::notice(
            Action::AuditDamaged,
            format!(
                "{} damaged record(s) found in {} at start-up, which was moved to {}.1 as it \
                 was; this file continues the chain from its last sound record: {}{}",
                damage.len(),
                path.display(),
                path.display(),
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ),
        )
    }

    fn torn_tail(torn: &[u8]) -> Self {
        Self::notice(
            Action::AuditTornTail,
            format!(
                "{} bytes after the last whole record were torn by a crash and cut off \
                 (sha256 {})",
                torn.len(),
                hex::encode(Sha256::digest(torn))
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{
        bounds::{MAX_REASON, MAX_TEXT},
        *,
    };

    fn entry(action: Action) -> Entry {
        Entry {
            action,
            names: vec!["n".to_owned()],
            peer: None,
            leader: None,
            outcome: Outcome::Allow,
            reason: None,
            latency: None,
        }
    }

    /// A log at `path` with a record of each of `actions`.
    fn logged(path: &Path, actions: &[Action]) -> AuditLog {
        let mut log = AuditLog::open(path, Rotation::NEVER).unwrap();
        for &action in actions {
            log.append(&entry(action)).unwrap();
        }
        log
    }

    /// `audit.jsonl` in a directory of the test's own, not made yet.
    pub(super) fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ns-audit-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir.join("audit.jsonl")
    }

    #[test]
    fn records_are_written_as_before_the_actions_were_typed() {
        let peer = crate::os::peer::Peer {
            pid: crate::os::process::Pid::new(7).unwrap(),
            uid: crate::os::process::Uid(1000),
            gid: 1000,
            exe: "/bin/x".to_owned(),
            comm: "x".to_owned(),
            status: None,
            process: None,
        };
        let entry = Entry {
            action: Action::WipeAll,
            names: vec!["a".to_owned()],
            peer: Some(peer),
            leader: Some(9),
            outcome: Outcome::HoldersSurvived,
            reason: Some("r".to_owned()),
            latency: None,
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"action":"wipe_all","names":["a"],"peer":{"pid":7,"uid":1000,"gid":1000,"exe":"/bin/x","comm":"x"},"leader":9,"outcome":"holders_survived","reason":"r"}"#
        );
    }

    #[test]
    fn records_chain_across_reopen_and_rotation() {
        let path = scratch("rotate");
        for action in [
            Action::Put,
            Action::Get,
            Action::List,
            Action::Exec,
            Action::Status,
        ] {
            // A tiny limit rotates before every record after the first.
            AuditLog::open(
                &path,
                Rotation {
                    max_bytes: 10,
                    keep_files: usize::MAX,
                },
            )
            .unwrap()
            .append(&entry(action))
            .unwrap();
        }
        let files = all_files(&path);
        assert_eq!(files.len(), 5, "{files:?}");
        let report = verify::verify(&files).unwrap();
        assert_eq!(
            (report.records, report.first_seq, report.last_seq),
            (5, 1, 5)
        );
        let first: serde_json::Value = serde_json::from_slice(
            fs::read(&files[0])
                .unwrap()
                .split(|&b| b == b'\n')
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["action"], "put");
        assert_eq!(first["prev"], chain::GENESIS);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn only_the_rotated_files_kept_remain_and_what_remains_still_verifies() {
        let path = scratch("retain");
        let rotation = Rotation {
            max_bytes: 10,
            keep_files: 2,
        };
        for _ in 0..6 {
            // Each record after the first rotates.
            AuditLog::open(&path, rotation)
                .unwrap()
                .append(&entry(Action::Status))
                .unwrap();
        }
        let files = all_files(&path);
        assert_eq!(
            files,
            vec![numbered(&path, 2), numbered(&path, 1), path.clone()]
        );
        let report = verify::verify(&files).unwrap();
        assert_eq!((report.first_seq, report.last_seq), (4, 6));
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_recorded() {
        let path = scratch("torn");
        AuditLog::open(&path, Rotation::NEVER)
            .unwrap()
            .append(&entry(Action::Put))
            .unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        io::Write::write_all(&mut file, br#"{"seq":2,"action":"ge"#).unwrap();
        assert!(
            verify::verify(&all_files(&path))
                .unwrap_err()
                .reason
                .contains("torn")
        );
        let log = AuditLog::open(&path, Rotation::NEVER).unwrap();
        assert_eq!(log.head(), 2);
        drop(log);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.lines().nth(1).unwrap().contains("audit_torn_tail"));
        assert_eq!(verify::verify(&all_files(&path)).unwrap().records, 2);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// The records `path` holds, and its length.
    fn records_and_len(path: &Path) -> (Vec<serde_json::Value>, u64) {
        let bytes = fs::read(path).unwrap();
        let records = String::from_utf8(written(&bytes).to_vec())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (records, bytes.len() as u64)
    }

    #[test]
    fn records_are_written_in_place_ahead_of_zero_room_which_a_stop_cuts_off() {
        let path = scratch("room");
        let log = logged(&path, &[Action::Put, Action::Get, Action::Exec]);
        let (records, len) = records_and_len(&path);
        assert_eq!((records.len(), len), (3, SEGMENT), "written in place");
        assert_eq!(verify::verify(&all_files(&path)).unwrap().records, 3);
        let mut shown = Vec::new();
        tail::print(&all_files(&path), &tail::Filter::default(), &mut shown).unwrap();
        assert_eq!(String::from_utf8(shown).unwrap().lines().count(), 3);
        drop(log);
        let records_len = fs::read(&path).unwrap().len() as u64;
        assert!(records_len < SEGMENT && !fs::read(&path).unwrap().contains(&0));
        // Reopened, it makes room again and goes on from its last record.
        let mut log = AuditLog::open(&path, Rotation::NEVER).unwrap();
        log.append(&entry(Action::List)).unwrap();
        let (records, len) = records_and_len(&path);
        assert_eq!((records.len(), len), (4, records_len + SEGMENT));
        assert_eq!(records[3]["seq"], 4);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A log as a crash leaves it: three sound records, then `after`, then
    /// zeros to the end of the segment.
    fn crashed(tag: &str, after: &[u8]) -> PathBuf {
        let path = scratch(tag);
        drop(logged(&path, &[Action::Put, Action::Get, Action::Exec]));
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(after);
        bytes.resize(SEGMENT as usize, 0);
        fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_crash_with_only_zeros_after_the_records_loses_nothing_and_writes_over_them() {
        let path = crashed("crash-clean", b"");
        assert_eq!(verify::verify(&all_files(&path)).unwrap().records, 3);
        let mut log = AuditLog::open(&path, Rotation::NEVER).unwrap();
        assert_eq!(log.head(), 3, "no torn tail in zero room");
        log.append(&entry(Action::List)).unwrap();
        let (records, len) = records_and_len(&path);
        assert_eq!((records.len(), len), (4, SEGMENT), "written over the zeros");
        assert_eq!(verify::verify(&all_files(&path)).unwrap().records, 4);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_crash_in_the_middle_of_a_segment_is_cut_at_the_last_whole_record_and_recorded() {
        // Part of record 4, a page that never reached the disk, then a later
        // page that did: unanswered records, written out of order.
        let mut after = br#"{"seq":4,"action":"ge"#.to_vec();
        after.resize(after.len() + 5000, 0);
        after.extend_from_slice(
            br#"t"}
{"seq":5,"action":"li"#,
        );
        let path = crashed("crash-torn", &after);
        let broken = verify::verify(&all_files(&path)).unwrap_err();
        assert!(broken.reason.contains("torn"), "{broken}");
        let log = AuditLog::open(&path, Rotation::NEVER).unwrap();
        assert_eq!(log.head(), 4);
        let bytes = fs::read(&path).unwrap();
        let records_len = written(&bytes).len();
        assert!(
            bytes[records_len..].iter().all(|&b| b == 0),
            "torn bytes left"
        );
        let (records, _) = records_and_len(&path);
        assert_eq!(records.len(), 4, "{records:?}");
        assert_eq!(records[3]["action"], "audit_torn_tail");
        let reason = records[3]["reason"].as_str().unwrap();
        let torn = format!("{} bytes after the last whole record", after.len());
        assert!(reason.contains(&torn), "{reason}");
        assert_eq!(verify::verify(&all_files(&path)).unwrap().records, 4);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// Six sound records of a log at `path`, each with its newline.
    fn six_records(path: &Path) -> Vec<Vec<u8>> {
        drop(logged(path, &[Action::Get; 6]));
        let good = fs::read(path).unwrap();
        good.split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Opens `damaged` as the log at `path`: the file must be moved aside
    /// whole and the chain go on after `newest`.
    fn kept_whole_and_chained_after(path: &Path, damaged: &[u8], newest: u64) -> String {
        fs::write(path, damaged).unwrap();
        let log = AuditLog::open(path, Rotation::NEVER).unwrap();
        assert_eq!(log.head(), newest + 1);
        assert_eq!(fs::read(numbered(path, 1)).unwrap(), damaged, "kept whole");
        drop(log);
        let (records, _) = records_and_len(path);
        assert_eq!(records[0]["action"], "audit_damaged");
        assert_eq!(records[0]["seq"], newest + 1);
        records[0]["reason"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_record_after_zeros_that_should_have_been_records_is_never_cut() {
        let path = scratch("gap");
        let lines = six_records(&path);
        let zeros = |n: usize| vec![0u8; n];
        // Record 4's page never reached the disk (its flush failed, so it
        // was refused), nor the end of 5's; 6's did, and 6 was answered.
        let half = lines[4].len() / 2;
        let damaged = [
            lines[..3].concat(),
            zeros(lines[3].len()),
            lines[4][..half].to_vec(),
            zeros(lines[4].len() - half),
            lines[5].clone(),
            zeros(4096),
        ]
        .concat();
        let reason = kept_whole_and_chained_after(&path, &damaged, 6);
        assert!(reason.contains("records up to seq 6"), "{reason}");
        let broken = verify::verify(&[numbered(&path, 1)]).unwrap_err();
        assert!(broken.reason.contains("never reached the disk"), "{broken}");
        // A stale copy of record 2 after zeros is damage too, but the chain
        // never goes back to it.
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
        let lines = six_records(&path);
        let damaged = [
            lines[..3].concat(),
            zeros(300),
            lines[1].clone(),
            zeros(4096),
        ]
        .concat();
        kept_whole_and_chained_after(&path, &damaged, 3);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_rotated_file_ends_at_its_last_record() {
        let path = scratch("rotate-room");
        let mut log = AuditLog::open(
            &path,
            Rotation {
                max_bytes: 400,
                keep_files: usize::MAX,
            },
        )
        .unwrap();
        for _ in 0..6 {
            log.append(&entry(Action::Status)).unwrap();
        }
        let files = all_files(&path);
        assert!(files.len() > 2, "{files:?}");
        for rotated in &files[..files.len() - 1] {
            let bytes = fs::read(rotated).unwrap();
            assert!(!bytes.contains(&0) && bytes.ends_with(b"\n"), "{rotated:?}");
        }
        let room = records_and_len(&path).1;
        assert_eq!(
            room, 4096,
            "room of a page where files rotate past 400 bytes"
        );
        assert_eq!(verify::verify(&files).unwrap().records, 6);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_log_has_one_writer_and_the_refused_one_is_told_whose_it_is() {
        let path = scratch("writer");
        let first = AuditLog::open(&path, Rotation::NEVER).unwrap();
        let err = AuditLog::open(&path, Rotation::NEVER)
            .err()
            .expect("a second writer");
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        let expected = format!("another guardian (pid {})", std::process::id());
        assert!(err.to_string().contains(&expected), "{err}");
        drop(first);
        AuditLog::open(&path, Rotation::NEVER).expect("free once the first is gone");
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn texts_a_client_chooses_are_cut_to_a_bound_and_say_so() {
        let path = scratch("bounded");
        let mut log = AuditLog::open(&path, Rotation::NEVER).unwrap();
        let mut long = entry(Action::Malformed);
        long.names = vec!["n".repeat(60_000)];
        long.reason = Some(format!("unknown op `{}`", "é".repeat(30_000)));
        log.append(&long).unwrap();
        drop(log);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.len() < 2 * (MAX_REASON + MAX_TEXT),
            "{} bytes",
            text.len()
        );
        let record: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let name = record["names"][0].as_str().unwrap();
        assert!(
            name.ends_with(&format!("…[{} bytes cut]", 60_000 - MAX_TEXT)),
            "{name}"
        );
        let reason = record["reason"].as_str().unwrap();
        assert!(reason.starts_with("unknown op `éé") && reason.contains("bytes cut]"));
        assert_eq!(verify::verify(&all_files(&path)).unwrap().records, 1);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_log_damaged_in_the_middle_is_moved_aside_and_continued_from_its_last_sound_record() {
        let path = scratch("damaged");
        drop(logged(&path, &[Action::Put, Action::Get, Action::Exec]));
        let good = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        // A fragment with a whole record appended to it, as a full disk left
        // logs before writes were undone.
        let damaged = format!(
            "{}\n{{\"seq\":2,\"act{}\n{}\n",
            lines[0], lines[1], lines[2]
        );
        fs::write(&path, &damaged).unwrap();
        let last_sound = chain::open(lines[2].as_bytes()).unwrap();
        let log = AuditLog::open(&path, Rotation::NEVER)
            .expect("a damaged log does not stop the guardian");
        assert_eq!(log.head(), 4);
        assert_eq!(
            fs::read_to_string(numbered(&path, 1)).unwrap(),
            damaged,
            "kept as it was"
        );
        let first: serde_json::Value =
            serde_json::from_str(fs::read_to_string(&path).unwrap().lines().next().unwrap())
                .unwrap();
        assert_eq!(first["action"], "audit_damaged");
        assert_eq!(first["seq"], 4);
        assert_eq!(first["prev"], last_sound.hash.as_str());
        let reason = first["reason"].as_str().unwrap();
        assert!(reason.contains("line 2 (bytes"), "{reason}");
        let broken = verify::verify(&all_files(&path)).unwrap_err();
        assert_eq!((broken.file, broken.line), (numbered(&path, 1), 2));
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn edits_deletions_and_swaps_are_found_at_the_first_bad_record() {
        let path = scratch("tamper");
        let _log = logged(
            &path,
            &[Action::Put, Action::Get, Action::Exec, Action::List],
        );
        let good = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let check = |text: String| {
            fs::write(&path, text).unwrap();
            verify::verify(&all_files(&path)).unwrap_err()
        };
        let edited = check(good.replace("\"exec\"", "\"list\""));
        assert_eq!((edited.line, edited.expected_seq), (3, 3));
        let deleted = check(format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]));
        assert_eq!(deleted.line, 2);
        let swapped = check(format!(
            "{}\n{}\n{}\n{}\n",
            lines[0], lines[2], lines[1], lines[3]
        ));
        assert_eq!(swapped.line, 2);
        let last_edited = check(good.replace("\"list\"", "\"status\""));
        assert_eq!(last_edited.line, 4);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
