//! The `ningen-shikkaku` binary: parses the command line and runs the guardian
//! or one client command.

use std::process::ExitCode;

use clap::Parser;
use guardian::{
    cli::{Cli, Command},
    client,
    daemon::{self, supervisor},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Guard(args) => {
            guardian::logging::init();
            daemon::run(daemon::Options {
                socket: args.socket.socket,
                audit: args.audit,
                config: args.config,
                ebpf: !args.no_ebpf,
            })
        }
        Command::Put(args) => client::put(args),
        Command::Get(args) => client::get(args),
        Command::Exec(args) => client::exec(args),
        Command::List(args) => client::list(args),
        Command::Revoke(args) => client::revoke(args),
        Command::Status(args) => client::status(args),
        Command::Doctor(args) => guardian::doctor::run(args),
        Command::Wipe(args) => client::wipe(args),
        Command::Audit(command) => client::audit(command),
        Command::Generate(command) => client::generate(command),
        Command::Supervise(args) => supervisor::run(&args.cgroup),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ningen-shikkaku: {}", one_line(&err));
            ExitCode::from(client::failure::exit_code(&err))
        }
    }
}

/// The error and its causes on one line. Our error types show their cause in
/// their own message, so a cause already shown is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.ends_with(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_shown_once() {
        let io = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let shown = anyhow::Error::from(guardian::config::ConfigError::Read {
            path: "/x".into(),
            source: io(),
        });
        assert_eq!(
            one_line(&shown),
            "cannot read /x: No such file or directory (os error 2)"
        );
        let context = anyhow::Error::from(io()).context("cannot read the secret");
        assert_eq!(
            one_line(&context),
            "cannot read the secret: No such file or directory (os error 2)"
        );
    }
}
