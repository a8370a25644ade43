//! The socket server: binds the guardian's socket, accepts connections within
//! the [`slots`](super::slots) limits, pins each peer, and serves each in a
//! task of its own: reads a frame (and a `put`'s secret bytes straight into
//! locked memory), hands the parsed request to the state machine, and writes
//! its reply.

use std::{
    io::IoSlice,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, Interest},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::{
    slots::{Limits, Slots},
    state::{
        Msg, Payload, Reply,
        budget::{Budget, OverBudget},
    },
};
use crate::{
    os::{
        peer::Peer,
        process::Uid,
        secret_mem::{MemoryError, SecretBuf},
    },
    protocol::{self, ErrorKind, FrameError, Request, Response},
};

/// Time a client has to send one whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to take its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a refused client has to take the reason.
const TELL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long accepting rests when the guardian is out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per interval for a condition that repeats.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Binds the socket, refusing to take over from a live guardian, from another
/// user's listener, or in a directory another user could redirect.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use nix::sys::stat::{Mode, umask};

    crate::os::socket_path::clear(path)?;
    // A socket is created with mode 0777 less the umask: 0666 lets any local
    // user connect (SO_PEERCRED decides what each may do), set as it is made
    // rather than by a chmod of the path after, which would follow a link
    // swapped in. The umask is the whole process's: changing it is safe here
    // because the guardian has one thread until the audit syncer starts,
    // after bind, so nothing else creates a file meanwhile.
    let saved = umask(Mode::from_bits_truncate(0o111));
    let bound = UnixListener::bind(path);
    umask(saved);
    bound.with_context(|| format!("cannot listen on {}", path.display()))
}

/// Accepts connections until the listener fails, serving each in a task.
/// Out of descriptors or memory, it rests instead of spinning, and says so
/// once per [`LOG_INTERVAL`].
pub async fn accept(
    listener: UnixListener,
    limits: Limits,
    budget: Budget,
    to_core: mpsc::UnboundedSender<Msg>,
) {
    let shared = Arc::new(Shared {
        slots: Slots::new(limits),
        refusals: Throttle::default(),
        budget,
        to_core,
    });
    let accept_failures = Throttle::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { serve(stream, &shared).await });
            }
            Err(err) => {
                if accept_failures.ready() {
                    tracing::error!(%err, "cannot accept connections");
                }
                if is_exhaustion(&err) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

/// True for the errors that retrying at once cannot fix.
fn is_exhaustion(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What every connection task shares.
struct Shared {
    slots: Slots,
    /// Throttles the log line for refused connections.
    refusals: Throttle,
    budget: Budget,
    to_core: mpsc::UnboundedSender<Msg>,
}

/// Gives a connection its slot and its pinned peer, then serves it.
async fn serve(mut stream: UnixStream, shared: &Shared) {
    let Ok(cred) = stream.peer_cred() else {
        return;
    };
    let _slot = match shared.slots.take(Uid(cred.uid())) {
        Ok(slot) => slot,
        Err(full) => {
            if shared.refusals.ready() {
                tracing::warn!(%full, "connection refused");
            }
            return tell(&mut stream, full.to_string()).await;
        }
    };
    let peer = match Peer::connected(&stream, &cred) {
        Ok(peer) => peer,
        Err(err) => {
            let reason = err.to_string();
            let _ = shared.to_core.send(Msg::Malformed {
                peer: None,
                reason: reason.clone(),
            });
            return tell(&mut stream, reason).await;
        }
    };
    connection(stream, peer, shared).await;
}

/// Serves one client: requests one after another until it closes the stream,
/// sends something malformed, or is too slow to send a request or take a reply.
async fn connection(mut stream: UnixStream, peer: Peer, shared: &Shared) {
    let to_core = &shared.to_core;
    loop {
        let read = read_request(&mut stream, peer.uid, &shared.budget);
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return,
            Ok(Err(err)) => return refuse(&mut stream, to_core, peer, err.to_string()).await,
            Err(_) => return refuse(&mut stream, to_core, peer, "request timed out".into()).await,
        };
        if let Err(err) = peer.check_in_control() {
            return refuse(&mut stream, to_core, peer, err.to_string()).await;
        }
        let (request, payload) = request;
        let (reply_to, reply) = oneshot::channel();
        let msg = Msg::Request {
            peer: peer.clone(),
            request,
            payload,
            reply: reply_to,
        };
        if to_core.send(msg).is_err() {
            return;
        }
        let Ok(reply) = reply.await else { return };
        match tokio::time::timeout(REPLY_TIMEOUT, write_reply(&mut stream, reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                let reason = format!(
                    "reply not taken within {} s; connection dropped",
                    REPLY_TIMEOUT.as_secs()
                );
                let _ = to_core.send(Msg::Malformed {
                    peer: Some(peer),
                    reason,
                });
                return;
            }
        }
    }
}

/// Errors reading a request.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Memory(#[from] MemoryError),
    #[error("put refused: {0}")]
    OverBudget(#[from] OverBudget),
}

/// Reads one request from a client of `uid`; `None` at a clean end of
/// stream. A `put`'s bytes are charged to the user before they are
/// allocated, so connections cannot lock more than the budget between them.
async fn read_request(
    stream: &mut UnixStream,
    uid: Uid,
    budget: &Budget,
) -> Result<Option<(Request, Option<Payload>)>, ReadError> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err.into()),
    }
    let mut header = vec![0u8; protocol::header_len(prefix)?];
    stream.read_exact(&mut header).await?;
    let request: Request = protocol::decode(&header)?;
    let payload = match &request {
        Request::Put { len, .. } => {
            let len = protocol::check_secret_len(*len)?;
            let charge = budget.charge(uid, len)?;
            let mut bytes = SecretBuf::new(len)?;
            // Straight from the socket into locked pages.
            stream.read_exact(bytes.as_mut_slice()).await?;
            Some(Payload { bytes, charge })
        }
        _ => None,
    };
    Ok(Some((request, payload)))
}

/// Writes the reply frame and the secret bytes after it in one writev, so the
/// client wakes once for the whole answer.
async fn write_reply(stream: &mut UnixStream, reply: Reply) -> std::io::Result<()> {
    let frame = protocol::encode(&reply.response);
    let mut parts: Vec<IoSlice<'_>> = std::iter::once(frame.as_slice())
        .chain(reply.secrets.iter().map(SecretBuf::as_slice))
        .map(IoSlice::new)
        .collect();
    let mut rest = parts.as_mut_slice();
    if !reply.files.is_empty() {
        let written = send_with_files(stream, rest, &reply.files).await?;
        IoSlice::advance_slices(&mut rest, written);
    }
    while !rest.is_empty() {
        let written = stream.write_vectored(rest).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
    // `reply.secrets` drops here and wipes the copies.
}

/// Sends the start of the reply with the secret files' descriptors attached
/// (SCM_RIGHTS), so the client receives them with its first read; returns
/// the bytes sent. The guardian's copies of the descriptors close with the
/// reply.
async fn send_with_files(
    stream: &UnixStream,
    parts: &[IoSlice<'_>],
    files: &[OwnedFd],
) -> std::io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                stream.as_raw_fd(),
                parts,
                &rights,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(sent) => return Ok(sent),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
}

/// Audits a malformed request, tells the client why, and closes.
async fn refuse(
    stream: &mut UnixStream,
    to_core: &mpsc::UnboundedSender<Msg>,
    peer: Peer,
    reason: String,
) {
    let _ = to_core.send(Msg::Malformed {
        peer: Some(peer),
        reason: reason.clone(),
    });
    tell(stream, reason).await;
}

/// Sends an error, if the client takes it soon, before the connection closes.
async fn tell(stream: &mut UnixStream, message: String) {
    let frame = protocol::encode(&Response::Error {
        message,
        kind: ErrorKind::Refused,
    });
    let _ = tokio::time::timeout(TELL_TIMEOUT, stream.write_all(&frame)).await;
}

/// Says "now" at most once per [`LOG_INTERVAL`], for conditions that repeat
/// as fast as an attacker can make them.
#[derive(Default)]
struct Throttle(std::sync::Mutex<Option<Instant>>);

impl Throttle {
    fn ready(&self) -> bool {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < LOG_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }
}
