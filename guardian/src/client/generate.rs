//! `generate`: shell completions and man pages, both made from the
//! command-line definitions in `cli`, so they cannot drift from what the
//! binary accepts.

#![forbid(unsafe_code)]

use std::{
    fs,
    io::{self, Write},
    path::Path,
};

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, GenerateCommand};

/// The command's name, as installed.
const NAME: &str = "ningen-shikkaku";

/// Writes what `command` asks for.
pub fn generate(command: GenerateCommand) -> anyhow::Result<()> {
    match command {
        GenerateCommand::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write
            // (`| head`), where an error is due.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), NAME, &mut script);
            io::stdout().write_all(&script)?;
            Ok(())
        }
        GenerateCommand::Man { dir } => man_pages(&dir)
            .with_context(|| format!("cannot write the man pages to {}", dir.display())),
    }
}

/// `ningen-shikkaku.1` and a page per visible subcommand
/// (`ningen-shikkaku-put.1`, ...).
fn man_pages(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_subcommand_gets_a_page_and_the_top_one_lists_exit_codes() {
        let dir = std::env::temp_dir().join(format!("ns-man-{}", std::process::id()));
        man_pages(&dir).unwrap();
        for page in [
            "",
            "-put",
            "-exec",
            "-list",
            "-audit-tail",
            "-generate-man",
            "-doctor",
        ] {
            assert!(dir.join(format!("{NAME}{page}.1")).exists(), "{page}");
        }
        assert!(!dir.join(format!("{NAME}-supervise.1")).exists());
        let top = fs::read_to_string(dir.join(format!("{NAME}.1"))).unwrap();
        assert!(top.contains("127"), "no exit codes in the page");
        let put = fs::read_to_string(dir.join(format!("{NAME}-put.1"))).unwrap();
        assert!(put.contains("replace"), "no --replace in put's page");
        fs::remove_dir_all(&dir).unwrap();
    }
}
