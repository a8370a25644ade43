//! The client's side of the socket: connect, make sure root answers, send one
//! request (and the secret bytes that follow its header), and read the
//! answer, with any secrets it carries read straight into locked memory.

#![forbid(unsafe_code)]

use std::{
    io::{IoSliceMut, Read, Write},
    mem::MaybeUninit,
    os::{fd::OwnedFd, unix::net::UnixStream},
    path::Path,
};

use anyhow::{Context, bail};

use super::failure::Failure;
use crate::{
    os::{secret_mem::SecretBuf, socket_path::Listener},
    protocol::{self, MAX_EXEC_NAMES, Request, Response},
};

/// What the guardian answered: the response, the secrets sent as bytes (in
/// locked memory), and the secret files sent as descriptors.
pub(super) struct Answer {
    pub response: Response,
    pub secrets: Vec<SecretBuf>,
    pub files: Vec<OwnedFd>,
}

/// Sends one request and reads the answer, with any secrets into locked
/// memory (the files an `exec` asked for are dropped: use [`call_for_files`]).
pub(super) fn call(
    socket: &Path,
    request: &Request,
    payload: Option<&SecretBuf>,
) -> anyhow::Result<(Response, Vec<SecretBuf>)> {
    let answer = call_for_files(socket, request, payload)?;
    Ok((answer.response, answer.secrets))
}

/// Sends one request and reads the whole answer. The process is made
/// non-dumpable before it connects: no other process of its uid can then
/// take the socket (pidfd_getfd) or its memory, and the guardian refuses
/// requests from a dumpable peer.
pub(super) fn call_for_files(
    socket: &Path,
    request: &Request,
    payload: Option<&SecretBuf>,
) -> anyhow::Result<Answer> {
    nix::sys::prctl::set_dumpable(false).context("cannot make this process non-dumpable")?;
    let mut stream = connect(socket)?;
    check_listener(&stream, socket)?;
    stream.write_all(&protocol::encode(request))?;
    if let Some(secret) = payload {
        stream.write_all(secret.as_slice())?;
    }
    let (prefix, files) = read_prefix(&stream)?;
    let mut header = vec![0u8; protocol::header_len(prefix)?];
    stream.read_exact(&mut header)?;
    let response: Response = protocol::decode(&header)?;
    let mut secrets = Vec::new();
    match &response {
        Response::Error { message, kind } => {
            return Err(Failure::of(*kind).because(message).into());
        }
        Response::Secrets { files: count, .. } if *count != files.len() => {
            bail!(
                "the guardian announced {count} secret files and sent {}",
                files.len()
            )
        }
        Response::Secrets { lens, .. } => {
            for &len in lens {
                let mut secret = SecretBuf::new(protocol::check_secret_len(len)?)?;
                stream.read_exact(secret.as_mut_slice())?;
                secrets.push(secret);
            }
        }
        _ => {}
    }
    Ok(Answer {
        response,
        secrets,
        files,
    })
}

/// Reads the frame's 4-byte length prefix, with the descriptors the
/// guardian sends along with the frame (the secret files of an `exec`),
/// close-on-exec until the caller decides which to pass on.
fn read_prefix(stream: &UnixStream) -> anyhow::Result<([u8; 4], Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut prefix = [0u8; 4];
    let mut files = Vec::new();
    let mut got = 0;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_EXEC_NAMES))];
    while got < prefix.len() {
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut prefix[got..])];
        let received =
            rustix::net::recvmsg(stream, &mut iov, &mut ancillary, RecvFlags::CMSG_CLOEXEC)
                .context("cannot read the guardian's answer")?;
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                files.extend(fds);
            }
        }
        if received.bytes == 0 {
            bail!("the guardian closed the connection");
        }
        got += received.bytes;
    }
    Ok((prefix, files))
}

/// Connects, saying which of "not running" and "not allowed" it is.
fn connect(socket: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(socket).map_err(|err| {
        let shown = socket.display();
        match Failure::of_connect(&err) {
            Some(denied @ Failure::PermissionDenied) => denied
                .because(format!(
                    "permission denied: this user may not connect to {shown} ({err}); \
                     check the modes of the socket and of the directories above it"
                ))
                .into(),
            Some(failure) => failure
                .because(format!(
                    "cannot reach the guardian at {shown}: {err} (is it running? as root: \
                     systemctl start ningen-shikkaku, or ningen-shikkaku guard)"
                ))
                .into(),
            None => anyhow::Error::new(err).context(format!("cannot connect to {shown}")),
        }
    })
}

/// Refuses a listener that is not root before anything is sent: whoever
/// listens on the path would otherwise get a `put`'s secret, or answer an
/// `exec` with values of their choosing.
fn check_listener(stream: &UnixStream, socket: &Path) -> anyhow::Result<()> {
    let listener = Listener::of(stream)
        .with_context(|| format!("cannot tell who listens on {}", socket.display()))?;
    if !listener.is_root() {
        bail!(
            "refusing to talk to {listener} on {}: the guardian runs as root; \
             someone else is listening there",
            socket.display()
        );
    }
    Ok(())
}
