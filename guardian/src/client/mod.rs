//! The client commands: each opens the socket, sends one request and prints
//! the answer. Secret bytes go from standard input (or a no-echo prompt) into
//! locked memory, onto the socket, and back into locked memory; `exec` builds
//! the child's environment entries in locked memory too.

use std::{
    ffi::{CStr, CString, OsString},
    fs::File,
    io::{self, IsTerminal, Read, Write},
    os::{
        fd::{AsFd, BorrowedFd},
        unix::{ffi::OsStrExt, net::UnixStream},
    },
    path::Path,
};

use anyhow::{Context, anyhow, bail};
use zeroize::Zeroize;

use crate::{
    audit,
    cli::{AuditCommand, ExecArgs, GetArgs, ListArgs, PutArgs, RevokeArgs, StatusArgs, WipeArgs},
    os::{hardening, secret_mem::SecretBuf},
    protocol::{self, MAX_SECRET, Request, Response},
};

/// `put`: stores a secret.
pub fn put(args: PutArgs) -> anyhow::Result<()> {
    hardening::forbid_core_dumps().context("cannot disable core dumps")?;
    let secret = read_secret(&args.name.to_string())?;
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    let request = Request::Put {
        name: args.name.clone(),
        bind: args.bind,
        ttl_secs: args.ttl.map(|ttl| ttl.as_secs().max(1)),
        len: secret.len(),
    };
    match call(&args.socket.socket, &request, Some(&secret))? {
        (Response::Stored { leader }, _) => {
            eprintln!("stored {}, bound to PID {leader}", args.name);
            Ok(())
        }
        (other, _) => Err(unexpected(other)),
    }
}

/// `get`: writes the secret's bytes to standard output, exactly.
pub fn get(args: GetArgs) -> anyhow::Result<()> {
    hardening::forbid_core_dumps().context("cannot disable core dumps")?;
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

/// `exec`: becomes the command, with secrets in its environment. Only returns on error.
pub fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let names = args.env.iter().map(|(_, name)| name.clone()).collect();
    let (response, secrets) = call(&args.socket.socket, &Request::Exec { names }, None)?;
    let Response::Secrets { .. } = response else {
        return Err(unexpected(response));
    };
    let mut entries = Vec::with_capacity(secrets.len());
    for ((var, name), secret) in args.env.iter().zip(&secrets) {
        entries.push(env_entry(var, secret).with_context(|| format!("secret {name}"))?);
    }
    drop(secrets);
    let kept: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| {
            !args
                .env
                .iter()
                .any(|(var, _)| key.as_bytes() == var.as_bytes())
        })
        .filter_map(|(key, value)| {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    let mut env: Vec<&CStr> = kept.iter().map(CString::as_c_str).collect();
    for entry in &entries {
        // env_entry wrote exactly one NUL, at the end.
        env.push(CStr::from_bytes_with_nul(entry.as_slice()).map_err(|err| anyhow!("{err}"))?);
    }
    let argv: Vec<CString> = args
        .command
        .iter()
        .map(to_cstring)
        .collect::<Result<_, _>>()?;
    let program = argv.first().ok_or_else(|| anyhow!("no command given"))?;
    let err = nix::unistd::execvpe(program, &argv, &env).unwrap_err();
    Err(anyhow!("cannot run {}: {err}", program.to_string_lossy()))
}

/// `list`.
pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let (response, _) = call(&args.socket.socket, &Request::List {}, None)?;
    let Response::List { secrets } = response else {
        return Err(unexpected(response));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&secrets)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>8} {:>8} {:>10} {:>10}",
        "NAME", "LEADER", "HOLDERS", "AGE", "TTL-LEFT"
    );
    for secret in secrets {
        let ttl = secret
            .ttl_left_secs
            .map_or("-".to_owned(), |secs| format!("{secs}s"));
        let age = format!("{}s", secret.age_secs);
        println!(
            "{:<24} {:>8} {:>8} {:>10} {:>10}",
            secret.name, secret.leader, secret.holders, age, ttl
        );
    }
    Ok(())
}

/// `revoke`.
pub fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let request = Request::Revoke {
        name: args.name.clone(),
    };
    match call(&args.socket.socket, &request, None)? {
        (Response::Revoked { holders_killed }, _) => {
            eprintln!("revoked {}; killed {holders_killed} holder(s)", args.name);
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
            eprintln!("wiped {secrets} secret(s); killed {holders_killed} holder(s)");
            Ok(())
        }
        (other, _) => Err(unexpected(other)),
    }
}

/// `audit verify` and `audit tail`: read the log directly (root only).
pub fn audit(command: AuditCommand) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("only root may read the audit log");
    }
    match command {
        AuditCommand::Verify { path } => {
            let files = audit::all_files(&path);
            let report = audit::verify::verify(&files).map_err(|broken| anyhow!("{broken}"))?;
            println!(
                "ok: {} records (seq {} to {}) in {} file(s); the chain holds",
                report.records, report.first_seq, report.last_seq, report.files
            );
            if report.first_seq > 1 {
                println!(
                    "note: the log starts at seq {}; older files are gone",
                    report.first_seq
                );
            }
            Ok(())
        }
        AuditCommand::Tail {
            follow,
            kind,
            uid,
            json,
            log,
        } => {
            let filter = audit::tail::Filter { kind, uid, json };
            let mut stdout = io::stdout().lock();
            audit::tail::print(&audit::all_files(&log), &filter, &mut stdout)?;
            if follow {
                audit::tail::follow(&log, &filter, &mut stdout)?;
            }
            Ok(())
        }
    }
}

/// `status`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (response, _) = call(&args.socket.socket, &Request::Status {}, None)?;
    let Response::Status(status) = response else {
        return Err(unexpected(response));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "guardian pid      {} (version {})",
        status.pid, status.version
    );
    println!("watch mode        {}", status.watch_mode);
    if let Some(err) = &status.ebpf_error {
        println!("eBPF unavailable  {err}");
    }
    println!("fork tracking     {}", status.fork_tracking);
    println!("containment       {}", status.containment);
    println!("fail closed       {}", status.fail_closed);
    println!(
        "tamper protection {} ({})",
        status.tamper_protection,
        match status.tamper_armed {
            true => "armed",
            false => "disarmed: nothing to protect",
        }
    );
    if let Some(err) = &status.lsm_error {
        println!("BPF LSM unused    {err}");
    }
    println!("memory backend    {}", status.memory_backend);
    println!("locked bytes      {}", status.locked_bytes);
    println!(
        "secrets {}  leaders {}  holders {}  dropped events {}",
        status.secrets, status.leaders, status.holders, status.dropped_events
    );
    let h = &status.hardening;
    println!(
        "hardening         dumpable {}  core limit {}  no_new_privs {}  mlockall {}  \
         seccomp {} ({} syscalls)  VmLck {} kB",
        h.dumpable,
        h.core_limit,
        h.no_new_privs,
        h.mlockall,
        h.seccomp,
        h.seccomp_allowed,
        h.locked_kib
    );
    Ok(())
}

/// Sends one request and reads the answer, with any secrets into locked memory.
fn call(
    socket: &Path,
    request: &Request,
    payload: Option<&SecretBuf>,
) -> anyhow::Result<(Response, Vec<SecretBuf>)> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the guardian at {} (is it running?)",
            socket.display()
        )
    })?;
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
        Response::Error { message } => bail!("{message}"),
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

/// Reads the secret: from a terminal without echo, else all of standard input.
/// Reads go through the raw descriptor, because std's stdin copies input into
/// a heap buffer first.
fn read_secret(name: &str) -> anyhow::Result<SecretBuf> {
    let stdin = io::stdin();
    let mut raw = unbuffered(stdin.as_fd())?;
    if !stdin.is_terminal() {
        return SecretBuf::read_to_end(&mut raw, MAX_SECRET)
            .context("cannot read the secret from standard input");
    }
    eprint!("secret for {name}: ");
    let secret = read_line_without_echo(&mut raw);
    eprintln!();
    secret
}

fn read_line_without_echo(tty: &mut File) -> anyhow::Result<SecretBuf> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let saved = tcgetattr(&*tty).context("cannot read terminal settings")?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&*tty, SetArg::TCSANOW, &silent).context("cannot turn off echo")?;
    let line = read_line(tty);
    tcsetattr(&*tty, SetArg::TCSANOW, &saved).context("cannot restore terminal settings")?;
    line
}

/// A duplicate of `fd` as a File, for reads and writes without std's buffers.
fn unbuffered(fd: BorrowedFd<'_>) -> io::Result<File> {
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// Reads up to a newline, byte by byte, so nothing past it lands in a buffer
/// outside locked memory.
fn read_line(input: &mut impl Read) -> anyhow::Result<SecretBuf> {
    let mut line = SecretBuf::new(MAX_SECRET)?;
    let mut len = 0;
    let mut byte = [0u8; 1];
    while len < MAX_SECRET && input.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.as_mut_slice()[len] = byte[0];
        len += 1;
    }
    byte.zeroize();
    line.truncate(len);
    Ok(line)
}

/// `VAR=secret\0` in locked memory.
fn env_entry(var: &str, secret: &SecretBuf) -> anyhow::Result<SecretBuf> {
    if secret.as_slice().contains(&0) {
        bail!("contains a NUL byte, which an environment variable cannot hold");
    }
    let mut entry = SecretBuf::new(var.len() + 1 + secret.len() + 1)?;
    let bytes = entry.as_mut_slice();
    bytes[..var.len()].copy_from_slice(var.as_bytes());
    bytes[var.len()] = b'=';
    bytes[var.len() + 1..var.len() + 1 + secret.len()].copy_from_slice(secret.as_slice());
    *bytes.last_mut().ok_or_else(|| anyhow!("empty entry"))? = 0;
    Ok(entry)
}

fn to_cstring(arg: &OsString) -> anyhow::Result<CString> {
    CString::new(arg.as_bytes()).map_err(|_| anyhow!("argument {arg:?} contains a NUL byte"))
}

fn unexpected(response: Response) -> anyhow::Error {
    anyhow!("unexpected answer from the guardian: {response:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_are_nul_terminated_and_refuse_nul_secrets() {
        let mut secret = SecretBuf::new(3).unwrap();
        secret.as_mut_slice().copy_from_slice(b"a=b");
        let entry = env_entry("TOKEN", &secret).unwrap();
        assert_eq!(entry.as_slice(), b"TOKEN=a=b\0");
        secret.as_mut_slice()[1] = 0;
        assert!(env_entry("TOKEN", &secret).is_err());
    }

    #[test]
    fn read_line_stops_at_newline() {
        let line = read_line(&mut &b"hunter2\nrest"[..]).unwrap();
        assert_eq!(line.as_slice(), b"hunter2");
    }
}
