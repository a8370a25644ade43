//! Bounds on what a record keeps of texts a client chooses, so that no
//! record is over a few KB whatever a client sends.

#![forbid(unsafe_code)]

use std::borrow::Cow;

use super::Entry;

/// The most bytes a record keeps of a reason (an error, which may quote what
/// a client sent) and of each other text a client chooses (a name, its
/// executable's path, its command name): no record is over a few KB.
pub(super) const MAX_REASON: usize = 1024;
/// See [`MAX_REASON`].
pub(super) const MAX_TEXT: usize = 256;

/// `text`, cut to at most `max` bytes (at a character boundary) and marked
/// with how much was cut.
fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes cut]", &text[..end], text.len() - end).into()
}

impl Entry {
    /// The entry with every text cut to its bound (itself, mostly).
    pub(super) fn bounded(&self) -> Cow<'_, Self> {
        let over = |text: &str, max: usize| text.len() > max;
        let fits = !self.names.iter().any(|name| over(name, MAX_TEXT))
            && !self
                .peer
                .as_ref()
                .is_some_and(|peer| over(&peer.exe, MAX_TEXT) || over(&peer.comm, MAX_TEXT))
            && !self
                .reason
                .as_ref()
                .is_some_and(|reason| over(reason, MAX_REASON));
        if fits {
            return Cow::Borrowed(self);
        }
        let mut entry = self.clone();
        for name in &mut entry.names {
            *name = bounded(name, MAX_TEXT).into_owned();
        }
        if let Some(peer) = &mut entry.peer {
            peer.exe = bounded(&peer.exe, MAX_TEXT).into_owned();
            peer.comm = bounded(&peer.comm, MAX_TEXT).into_owned();
        }
        if let Some(reason) = &mut entry.reason {
            *reason = bounded(reason, MAX_REASON).into_owned();
        }
        Cow::Owned(entry)
    }
}
