//! Reading the secret a user types or pipes in: all of standard input, or one
//! line from a terminal with echo off. Every read goes through a raw
//! descriptor into locked memory, never through std's heap buffers.

#![forbid(unsafe_code)]

use std::{
    fs::File,
    io::{self, IsTerminal, Read},
    os::fd::{AsFd, BorrowedFd},
};

use anyhow::Context;
use nix::sys::{
    signal::{SigSet, Signal},
    termios::{LocalFlags, SetArg, Termios, tcgetattr, tcsetattr},
};
use zeroize::Zeroize;

use crate::{os::secret_mem::SecretBuf, protocol::MAX_SECRET};

/// Reads the secret: from a terminal without echo, else all of standard input.
/// Reads go through the raw descriptor, because std's stdin copies input into
/// a heap buffer first.
pub(super) fn read_secret(name: &str) -> anyhow::Result<SecretBuf> {
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
    let saved = tcgetattr(&*tty).context("cannot read terminal settings")?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    restore_on_signal(tty, saved.clone())?;
    let echo = EchoOff {
        tty: tty.try_clone()?,
        saved,
    };
    tcsetattr(&*tty, SetArg::TCSANOW, &silent).context("cannot turn off echo")?;
    let line = read_line(tty);
    drop(echo);
    line
}

/// Echo is off while this lives; dropping it (on every return path, and
/// when a panic unwinds) turns it back on.
struct EchoOff {
    tty: File,
    saved: Termios,
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.tty, SetArg::TCSANOW, &self.saved);
    }
}

/// A signal that ends the process would skip every Drop, and leave the
/// terminal without echo. So from here on SIGINT, SIGQUIT, SIGTERM and SIGHUP
/// are blocked in this thread and taken by a helper thread (which inherits
/// the mask), which restores the terminal and ends the process with the
/// status a shell shows for that signal (128 + its number).
fn restore_on_signal(tty: &File, saved: Termios) -> anyhow::Result<()> {
    let signals: SigSet = [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ]
    .into_iter()
    .collect();
    signals
        .thread_block()
        .context("cannot hold back signals at the prompt")?;
    let tty = tty.try_clone()?;
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
            eprintln!();
            std::process::exit(128 + signal as i32);
        }
    });
    Ok(())
}

/// A duplicate of `fd` as a File, for reads and writes without std's buffers.
pub(super) fn unbuffered(fd: BorrowedFd<'_>) -> io::Result<File> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_line_stops_at_newline() {
        let line = read_line(&mut &b"hunter2\nrest"[..]).unwrap();
        assert_eq!(line.as_slice(), b"hunter2");
    }
}
