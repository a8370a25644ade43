//! The client commands: each opens the socket, sends one request and prints
//! the answer. Secret bytes go from standard input (or a no-echo prompt) into
//! locked memory, onto the socket, and back into locked memory; `exec` builds
//! the child's environment entries in locked memory too.
//!
//! The subcommands live here but `exec` (in `exec`, which also takes secrets
//! as files); `transport` sends a request and reads the
//! answer, `prompt` reads the secret from standard input or a terminal,
//! `render` prints `list` and `status` for people, `failure` gives each kind
//! of failure its exit code, and `generate` writes man pages and completions.

#![forbid(unsafe_code)]

mod exec;
pub mod failure;
mod generate;
mod prompt;
mod render;
mod transport;

use std::{
    io::{self, Write},
    os::fd::AsFd,
    time::SystemTime,
};

use anyhow::{Context, anyhow, bail};

use crate::{
    audit,
    cli::{AuditCommand, GetArgs, ListArgs, PutArgs, RevokeArgs, StatusArgs, WipeArgs},
    os::{hardening, process::Pid},
    protocol::{Request, Response, StatusInfo},
};
pub use exec::exec;
use failure::Failure;
pub use generate::generate;
use prompt::{read_secret, unbuffered};
use transport::call;

/// `put`: stores a secret.
pub fn put(args: PutArgs) -> anyhow::Result<()> {
    hardening::forbid_core_dumps().context("cannot disable core dumps")?;
    let secret = read_secret(&args.name.to_string())?;
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    let request = Request::Put {
        name: args.name.clone(),
        bind: args
            .bind
            .map(Pid::try_from)
            .transpose()
            .map_err(|err| anyhow!(err))?,
        ttl_secs: args.ttl,
        len: secret.len(),
        replace: args.replace,
    };
    let (response, _) = call(&args.socket.socket, &request, Some(&secret))?;
    let Response::Stored {
        leader,
        replaced_holders_killed,
    } = response
    else {
        return Err(unexpected(response));
    };
    if !args.quiet.quiet {
        match replaced_holders_killed {
            Some(killed) => confirm(format_args!(
                "replaced {}, still bound to PID {leader}; killed {killed} holder(s) of the old value",
                args.name
            )),
            None => confirm(format_args!("stored {}, bound to PID {leader}", args.name)),
        }
    }
    Ok(())
}

/// `get`: writes the secret's bytes to standard output, exactly.
pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let request = Request::Get { name: args.name };
    let (response, secrets) = call(&args.socket.socket, &request, None)?;
    let Response::Secrets { .. } = response else {
        return Err(unexpected(response));
    };
    // Write through the raw descriptor: std's stdout is line-buffered on the heap.
    let mut stdout = unbuffered(io::stdout().as_fd())?;
    for secret in &secrets {
        stdout.write_all(secret.as_slice())?;
    }
    Ok(())
}

/// `list`.
pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let request = Request::List { all: args.all };
    let (response, _) = call(&args.socket.socket, &request, None)?;
    let Response::List { secrets } = response else {
        return Err(unexpected(response));
    };
    match args.json {
        true => output(&render::list_json(&secrets, SystemTime::now())?),
        false => output(&render::list(&secrets, args.all)),
    }
}

/// `revoke`.
pub fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let request = Request::Revoke {
        name: args.name.clone(),
    };
    match call(&args.socket.socket, &request, None)? {
        (Response::Revoked { holders_killed }, _) => {
            if !args.quiet.quiet {
                confirm(format_args!(
                    "revoked {}; killed {holders_killed} holder(s)",
                    args.name
                ));
            }
            Ok(())
        }
        (other, _) => Err(unexpected(other)),
    }
}

/// `wipe --all`.
pub fn wipe(args: WipeArgs) -> anyhow::Result<()> {
    match call(&args.socket.socket, &Request::WipeAll {}, None)? {
        (
            Response::Wiped {
                secrets,
                holders_killed,
            },
            _,
        ) => {
            if !args.quiet.quiet {
                confirm(format_args!(
                    "wiped {secrets} secret(s); killed {holders_killed} holder(s)"
                ));
            }
            Ok(())
        }
        (other, _) => Err(unexpected(other)),
    }
}

/// `audit verify` and `audit tail`: read the log directly (root only).
pub fn audit(command: AuditCommand) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Failure::PermissionDenied
            .because("permission denied: only root may read the audit log")
            .into());
    }
    match command {
        AuditCommand::Verify { log } => {
            let files = audit::all_files(&log);
            let report = audit::verify::verify(&files).map_err(|broken| anyhow!("{broken}"))?;
            let mut said = format!(
                "ok: {} records (seq {} to {}) in {} file(s); the chain holds",
                report.records, report.first_seq, report.last_seq, report.files
            );
            if report.first_seq > 1 {
                said.push_str(&format!(
                    "\nnote: the log starts at seq {}; older files are gone",
                    report.first_seq
                ));
            }
            output(&said)
        }
        AuditCommand::Tail {
            follow,
            kind,
            uid,
            json,
            last,
            log,
        } => {
            let filter = audit::tail::Filter {
                last,
                kind,
                uid,
                json,
            };
            let mut stdout = io::stdout().lock();
            let printed = audit::tail::print(&audit::all_files(&log), &filter, &mut stdout)?;
            if follow {
                audit::tail::follow(&log, printed, &filter, &mut stdout)?;
            }
            Ok(())
        }
    }
}

/// `status`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let status = status_of(&args.socket.socket)?;
    match args.json {
        true => output(&serde_json::to_string_pretty(&status)?),
        false => output(&render::status(&status)),
    }
}

/// The guardian's `status` answer, from its socket at `socket`.
pub fn status_of(socket: &std::path::Path) -> anyhow::Result<StatusInfo> {
    let (response, _) = call(socket, &Request::Status {}, None)?;
    match response {
        Response::Status(status) => Ok(*status),
        other => Err(unexpected(other)),
    }
}

/// Writes `text` to standard output (with a final newline), failing rather
/// than panicking as `print!` does when the reader has gone.
pub(crate) fn output(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

/// A confirmation on standard error. The work is done: a reader that has
/// gone (a closed pipe) is no failure, and no panic.
fn confirm(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "{line}");
}

pub(super) fn unexpected(response: Response) -> anyhow::Error {
    anyhow!("unexpected answer from the guardian: {response:?}")
}
