//! `exec`: asks for the secrets, then becomes the command. Secrets wanted in
//! the environment (`--env VAR=NAME`) arrive as bytes, straight into locked
//! memory, and become `VAR=value` entries built in locked memory too. Secrets
//! wanted as files (`--file VAR=NAME`) arrive as descriptors of sealed
//! memfds and never enter this process's memory: the command inherits the
//! descriptor and gets `VAR=/proc/self/fd/N`.

#![forbid(unsafe_code)]

use std::{
    ffi::{CStr, CString, OsString},
    os::unix::ffi::OsStrExt,
};

use anyhow::{Context, anyhow, bail};

use super::{failure::Failure, transport::call_for_files, unexpected};
use crate::{
    cli::ExecArgs,
    os::{hardening, secret_mem::SecretBuf},
    protocol::{Delivery, ExecNames, Request, Response, SecretName},
};

/// Becomes the command, with its secrets. Only returns on error.
pub fn exec(args: ExecArgs) -> anyhow::Result<()> {
    // Before it asks: the command it becomes, and all that command starts,
    // inherit a core limit under which the kernel dumps nothing anywhere.
    hardening::limit_holder_cores().context("cannot limit core dumps")?;
    let asked = Asked::of(&args)?;
    let request = Request::Exec {
        names: ExecNames::try_from(asked.names.clone()).map_err(|err| anyhow!(err))?,
        delivery: asked.delivery.clone(),
    };
    let answer = call_for_files(&args.socket.socket, &request, None)?;
    let Response::Secrets { .. } = answer.response else {
        return Err(unexpected(answer.response));
    };
    let secrets = asked.matched(Delivery::as_bytes, answer.secrets)?;
    let files = asked.matched(Delivery::as_file, answer.files)?;
    let mut entries = Vec::with_capacity(args.env.len());
    for (var, name) in &args.env {
        let secret = secrets
            .get(name)
            .ok_or_else(|| anyhow!("no secret {name}"))?;
        entries.push(env_entry(var, secret).with_context(|| format!("secret {name}"))?);
    }
    drop(secrets);
    let mut file_entries = Vec::with_capacity(args.files.len());
    for (var, name) in &args.files {
        let file = files
            .get(name)
            .ok_or_else(|| anyhow!("no secret file {name}"))?;
        // The command inherits it: the one descriptor it is meant to keep.
        nix::fcntl::fcntl(
            file,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )?;
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
        file_entries.push(CString::new(format!("{var}={path}"))?);
    }
    let ours = |key: &[u8]| {
        args.env
            .iter()
            .chain(&args.files)
            .any(|(var, _)| key == var.as_bytes())
    };
    let kept: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| !ours(key.as_bytes()))
        .filter_map(|(key, value)| {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    let mut env: Vec<&CStr> = kept
        .iter()
        .chain(&file_entries)
        .map(CString::as_c_str)
        .collect();
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
    let Err(err) = nix::unistd::execvpe(program, &argv, &env);
    let program = program.to_string_lossy();
    // As env(1) and the shells do: 127 for a command not found, 126 for one
    // that cannot be run.
    Err(match err {
        nix::errno::Errno::ENOENT => {
            Failure::NotFound.because(format!("{program}: command not found"))
        }
        _ => Failure::NotExecutable.because(format!("cannot run {program}: {}", err.desc())),
    }
    .into())
}

/// What one `exec` asks for: each secret once, however many variables it
/// goes into, and how it wants it.
struct Asked {
    names: Vec<SecretName>,
    delivery: Vec<Delivery>,
}

impl Asked {
    fn of(args: &ExecArgs) -> anyhow::Result<Self> {
        let vars: Vec<&String> = args
            .env
            .iter()
            .chain(&args.files)
            .map(|(var, _)| var)
            .collect();
        if let Some(twice) = vars
            .iter()
            .enumerate()
            .find(|(at, var)| vars[..*at].contains(var))
        {
            bail!("{} is given twice", twice.1);
        }
        let mut asked = Self {
            names: Vec::new(),
            delivery: Vec::new(),
        };
        for (wanted, pairs) in [(Delivery::Env, &args.env), (Delivery::File, &args.files)] {
            for (_, name) in pairs {
                match asked.names.iter().position(|known| known == name) {
                    Some(at) if asked.delivery[at] != wanted => asked.delivery[at] = Delivery::Both,
                    Some(_) => {}
                    None => {
                        asked.names.push(name.clone());
                        asked.delivery.push(wanted);
                    }
                }
            }
        }
        Ok(asked)
    }

    /// Pairs what arrived (bytes or files, in request order) with the names
    /// whose delivery `wanted` says includes it.
    fn matched<T>(
        &self,
        wanted: fn(Delivery) -> bool,
        arrived: Vec<T>,
    ) -> anyhow::Result<Received<T>> {
        let names: Vec<SecretName> = self
            .names
            .iter()
            .zip(&self.delivery)
            .filter(|&(_, &how)| wanted(how))
            .map(|(name, _)| name.clone())
            .collect();
        if names.len() != arrived.len() {
            bail!(
                "the guardian sent {} of the {} secrets asked for",
                arrived.len(),
                names.len()
            );
        }
        Ok(Received(names.into_iter().zip(arrived).collect()))
    }
}

/// Secrets (or secret files) that arrived, by name.
struct Received<T>(Vec<(SecretName, T)>);

impl<T> Received<T> {
    fn get(&self, name: &SecretName) -> Option<&T> {
        self.0
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, item)| item)
    }
}

/// `VAR=secret\0` in locked memory.
fn env_entry(var: &str, secret: &SecretBuf) -> anyhow::Result<SecretBuf> {
    if secret.as_slice().contains(&0) {
        bail!("contains a NUL byte, which an environment variable cannot hold (use --file)");
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> ExecArgs {
        let mut full = vec!["ns", "exec"];
        full.extend(argv);
        full.extend(["--", "true"]);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Exec(args) => args,
            _ => panic!("not exec"),
        }
    }

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
    fn each_secret_is_asked_for_once_with_how_it_is_wanted() {
        let asked = Asked::of(&args(&[
            "--env",
            "A=tok",
            "--file",
            "B_FILE=db",
            "--file",
            "C_FILE=tok",
            "--env",
            "D=tok",
        ]))
        .unwrap();
        let names: Vec<String> = asked.names.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["tok", "db"]);
        assert_eq!(asked.delivery, [Delivery::Both, Delivery::File]);
        let files = asked
            .matched(Delivery::as_file, vec!["f-tok", "f-db"])
            .unwrap();
        assert_eq!(files.get(&"db".parse().unwrap()), Some(&"f-db"));
        assert!(
            asked.matched(Delivery::as_bytes, vec![1, 2]).is_err(),
            "one too many"
        );
    }

    #[test]
    fn a_variable_is_given_once() {
        let err = Asked::of(&args(&["--env", "A=tok", "--file", "A=db"]))
            .err()
            .unwrap();
        assert!(err.to_string().contains("A is given twice"), "{err}");
    }
}
