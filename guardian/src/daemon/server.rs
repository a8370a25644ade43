//! The socket server: binds the guardian's socket, accepts connections up to
//! a limit, and serves each in a task of its own: reads a frame (and a `put`'s
//! secret bytes straight into locked memory), hands the parsed request to the
//! state machine, and writes its reply.

use std::{
    fs,
    io::IoSlice,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc, oneshot},
};

use super::state::{Msg, Reply};
use crate::{
    os::{
        peer::Peer,
        secret_mem::{MemoryError, SecretBuf},
    },
    protocol::{self, FrameError, Request, Response},
};

/// Most connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send one whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the socket, refusing to take over from a live guardian.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("a guardian is already listening on {}", path.display());
        }
        fs::remove_file(path).with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    // Any local user may connect; SO_PEERCRED decides what each may do.
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Accepts connections until the listener fails, serving each in a task.
pub async fn accept(listener: UnixListener, to_core: mpsc::UnboundedSender<Msg>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let to_core = to_core.clone();
                tokio::spawn(async move {
                    connection(stream, to_core).await;
                    drop(permit);
                });
            }
            Err(err) => tracing::warn!(%err, "accept failed"),
        }
    }
}

/// Serves one client: requests one after another until it closes the stream
/// or sends something malformed.
async fn connection(mut stream: UnixStream, to_core: mpsc::UnboundedSender<Msg>) {
    let peer = stream.peer_cred().ok().as_ref().and_then(Peer::from_cred);
    let Some(peer) = peer else {
        let _ = to_core.send(Msg::Malformed {
            peer: None,
            reason: "peer has no visible pid".into(),
        });
        return;
    };
    loop {
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return,
            Ok(Err(err)) => return refuse(&mut stream, &to_core, peer, err.to_string()).await,
            Err(_) => return refuse(&mut stream, &to_core, peer, "request timed out".into()).await,
        };
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
        if write_reply(&mut stream, reply).await.is_err() {
            return;
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
}

/// Reads one request; `None` at a clean end of stream.
async fn read_request(
    stream: &mut UnixStream,
) -> Result<Option<(Request, Option<SecretBuf>)>, ReadError> {
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
            let mut bytes = SecretBuf::new(protocol::check_secret_len(*len)?)?;
            // Straight from the socket into locked pages.
            stream.read_exact(bytes.as_mut_slice()).await?;
            Some(bytes)
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

/// Audits a malformed request, tells the client why, and closes.
async fn refuse(
    stream: &mut UnixStream,
    to_core: &mpsc::UnboundedSender<Msg>,
    peer: Peer,
    reason: String,
) {
    let response = Response::Error {
        message: reason.clone(),
    };
    let _ = stream.write_all(&protocol::encode(&response)).await;
    let _ = to_core.send(Msg::Malformed {
        peer: Some(peer),
        reason,
    });
}
