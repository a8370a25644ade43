//! The `ningen-shikkaku` binary: parses the command line and runs the guardian
//! or one client command.

use std::process::ExitCode;

use clap::Parser;
use guardian::{
    cli::{Cli, Command},
    client, daemon, supervisor,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Guard(args) => {
            init_logging();
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
        Command::Wipe(args) => client::wipe(args),
        Command::Audit(command) => client::audit(command),
        Command::Supervise(args) => supervisor::run(&args.cgroup),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ningen-shikkaku: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
