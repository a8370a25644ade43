//! Reading an existing log back on open: where its chain goes on, the
//! zero-filled room after its last record, a torn fragment at its end, and
//! any whole line in it that is not a sound record.

#![forbid(unsafe_code)]

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
};

use super::chain;

/// Damaged records listed in an `audit_damaged` record, at most.
pub(super) const MAX_DAMAGE_SHOWN: usize = 10;

/// What an existing log says: where its chain goes on, and what is wrong.
pub(super) struct Tail {
    /// The last sound record's sequence number and hash.
    pub(super) seq: u64,
    pub(super) prev: String,
    /// Bytes of whole lines.
    pub(super) whole_len: u64,
    /// Where the zeros after the whole lines end, when nothing else follows
    /// them: the room a writer made for the next records.
    pub(super) zeros_to: u64,
    /// Whatever else follows the whole lines, to its last non-zero byte: a
    /// record cut short by a crash, or records whose pages reached the disk
    /// before an earlier one's (never answered: no flush completed).
    pub(super) torn: Option<Vec<u8>>,
    /// Whole lines that are not sound records.
    pub(super) damage: Vec<Damage>,
}

/// A whole line of the log that is not a sound record.
pub(super) struct Damage {
    line: usize,
    offset: u64,
    len: usize,
    reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} (bytes {} to {}): {}",
            self.line,
            self.offset,
            self.offset + self.len as u64,
            self.reason
        )
    }
}

impl Tail {
    /// Reads every line: the last sound record, the room or torn fragment
    /// at the end, and every whole line that is not a sound record.
    pub(super) fn read(file: &File) -> io::Result<Self> {
        let mut tail = Self {
            seq: 0,
            prev: chain::GENESIS.to_owned(),
            whole_len: 0,
            zeros_to: 0,
            torn: None,
            damage: Vec::new(),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        for number in 1.. {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                tail.zeros_to = tail.whole_len;
                break;
            }
            if line.contains(&0) || line.last() != Some(&b'\n') {
                reader.read_to_end(&mut line)?;
                tail.end(number, line);
                break;
            }
            match chain::open(&line[..n - 1]) {
                Ok(link) => (tail.seq, tail.prev) = (link.seq, link.hash),
                Err(reason) => tail.damage.push(Damage {
                    line: number,
                    offset: tail.whole_len,
                    len: n,
                    reason,
                }),
            }
            tail.whole_len += n as u64;
        }
        Ok(tail)
    }

    /// Takes `rest`, everything after the whole lines (the first of them
    /// line `number`): room if it is all zeros; a torn tail to its last
    /// non-zero byte if no sound record is in it; else damage. A sound
    /// record after zeros may have been answered (its page reached the disk,
    /// an earlier one was lost: a failed write-back, a bad sector), so it is
    /// never cut: the file is kept whole, like any other damage.
    fn end(&mut self, number: usize, mut rest: Vec<u8>) {
        self.zeros_to = self.whole_len;
        let Some(last) = rest.iter().rposition(|&b| b != 0) else {
            self.zeros_to += rest.len() as u64;
            return;
        };
        rest.truncate(last + 1);
        let after_zeros = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        // A record ends at its newline, or where another lost region starts.
        let newest = rest[after_zeros..]
            .split(|&b| b == b'\n' || b == 0)
            .filter_map(|piece| chain::open(piece).ok())
            .max_by_key(|link| link.seq);
        let Some(newest) = newest else {
            self.torn = Some(rest);
            return;
        };
        self.damage.push(Damage {
            line: number,
            offset: self.whole_len,
            len: rest.len(),
            reason: format!(
                "zeros where records should be, then records up to seq {}: part of the \
                 log never reached the disk (a crash mid-flush, a failed write-back, or a \
                 damaged disk)",
                newest.seq
            ),
        });
        // The chain goes on after the newest record, never back to a stale
        // one (an old block the file system left in place).
        if newest.seq > self.seq {
            (self.seq, self.prev) = (newest.seq, newest.hash);
        }
    }
}
