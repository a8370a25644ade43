//! Malformed messages: each connection that sends something other than a
//! request is audited and closed. One user opening connections in a loop
//! could otherwise grow the log as fast as the disk takes it, so the first
//! [`MALFORMED_PER_SECOND`] of each uid in a second are recorded one by one,
//! and the rest of that second are counted and summed up in one record per
//! uid when it ends.

#![forbid(unsafe_code)]

use std::{collections::HashMap, time::Duration};

use super::{Core, Msg, os::Os, os::Task};
use crate::{
    audit::{Action, Entry},
    os::{peer::Peer, process::Uid},
};

/// Malformed messages of one uid recorded one by one in a second.
pub(super) const MALFORMED_PER_SECOND: u32 = 8;
const WINDOW: Duration = Duration::from_secs(1);

/// This second's malformed messages, per uid (`None`: a peer whose
/// credentials could not be read).
#[derive(Default)]
pub(super) struct MalformedBooks {
    /// Per uid: (recorded one by one, counted only).
    seen: HashMap<Option<Uid>, (u32, u64)>,
    /// The end of the second, while one is running.
    window: Option<Task>,
}

impl<O: Os> Core<O> {
    /// Audits a malformed message, or counts it past the limit.
    pub(super) fn malformed(&mut self, peer: Option<Peer>, reason: String) {
        if self.malformed.window.is_none() {
            self.malformed.window = Some(self.os.after(WINDOW, Msg::MalformedSummary));
        }
        let uid = peer.as_ref().map(|peer| peer.uid);
        let (recorded, counted) = self.malformed.seen.entry(uid).or_default();
        if *recorded >= MALFORMED_PER_SECOND {
            *counted += 1;
            return;
        }
        *recorded += 1;
        self.record(Entry {
            peer,
            ..Entry::notice(Action::Malformed, reason)
        });
    }

    /// Ends the second: one record per uid for what was only counted.
    pub(super) fn summarize_malformed(&mut self) {
        self.malformed.window = None;
        let mut seen: Vec<_> = std::mem::take(&mut self.malformed.seen)
            .into_iter()
            .filter(|&(_, (_, counted))| counted > 0)
            .collect();
        seen.sort_unstable_by_key(|&(uid, _)| uid.map(|uid| uid.0));
        for (uid, (_, counted)) in seen {
            let from = uid.map_or("a peer of unknown uid".to_owned(), |uid| {
                format!("uid {uid}")
            });
            let reason = format!(
                "{counted} more malformed messages from {from} in the last second, past the \
                 limit of {MALFORMED_PER_SECOND} recorded one by one; each was refused"
            );
            self.record(Entry::notice(Action::Malformed, reason));
        }
    }
}
