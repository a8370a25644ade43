//! The client's side of the socket: connect, make sure root answers, send one
//! request (and the secret bytes that follow its header), and read the
//! answer, with any secrets it carries read straight into locked memory.

#![forbid(unsafe_code)]

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{Context, bail};

use super::failure::Failure;
use crate::{
    os::{secret_mem::SecretBuf, socket_path::Listener},
    protocol::{self, Request, Response},
};

/// Sends one request and reads the answer, with any secrets into locked memory.
/// The process is made non-dumpable before it connects: no other process of
/// its uid can then take the socket (pidfd_getfd) or its memory, and the
/// guardian refuses requests from a dumpable peer.
pub(super) fn call(
    socket: &Path,
    request: &Request,
    payload: Option<&SecretBuf>,
) -> anyhow::Result<(Response, Vec<SecretBuf>)> {
    nix::sys::prctl::set_dumpable(false).context("cannot make this process non-dumpable")?;
    let mut stream = connect(socket)?;
    check_listener(&stream, socket)?;
    stream.write_all(&protocol::encode(request))?;
    if let Some(secret) = payload {
        stream.write_all(secret.as_slice())?;
    }
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .context("the guardian closed the connection")?;
    let mut header = vec![0u8; protocol::header_len(prefix)?];
    stream.read_exact(&mut header)?;
    let response: Response = protocol::decode(&header)?;
    let mut secrets = Vec::new();
    match &response {
        Response::Error { message, kind } => {
            return Err(Failure::of(*kind).because(message).into());
        }
        Response::Secrets { lens } => {
            for &len in lens {
                let mut secret = SecretBuf::new(protocol::check_secret_len(len)?)?;
                stream.read_exact(secret.as_mut_slice())?;
                secrets.push(secret);
            }
        }
        _ => {}
    }
    Ok((response, secrets))
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
