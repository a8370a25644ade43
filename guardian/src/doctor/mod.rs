//! `doctor`: which protections this host gives, and how to get the
//! strongest. Any user may run it: it reads the host's files (`host`,
//! parsed in `parse`), asks a running guardian for its `status`, judges
//! each fact (`checks`) and prints one line per check, with the fix where
//! there is one. It exits 0 only when the guardian runs in its strongest
//! mode (tamper protection `bpf-lsm+tracepoints`), and
//! [`Failure::NotStrongest`]'s code otherwise, so a script can act on it.

#![forbid(unsafe_code)]

mod checks;
mod host;
mod parse;

use std::fmt::Write;

use serde::Serialize;

pub use checks::{Check, Guardian, Verdict};
pub use host::Host;

use crate::{
    cli::DoctorArgs,
    client::{self, failure::Failure},
};

/// What `doctor` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// True when the guardian runs in its strongest mode.
    pub strongest: bool,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Judges `host`, and `guardian` as found.
    pub fn of(host: &Host, guardian: &Guardian) -> Self {
        Self {
            strongest: guardian.is_strongest(),
            checks: checks::all(&host.facts(), guardian),
        }
    }

    /// One line per check: its verdict, its name, what was found; then
    /// each step of its fix on a line of its own, indented.
    pub fn text(&self) -> String {
        const VERDICT: usize = 8;
        // The longest name (syscall-tables) and two spaces.
        const NAME: usize = 16;
        let mut out = String::new();
        for check in &self.checks {
            let _ = writeln!(
                out,
                "{:<VERDICT$}{:<NAME$}{}",
                check.verdict.as_str(),
                check.name,
                check.found
            );
            for step in &check.fix {
                let _ = writeln!(out, "{:width$}fix: {step}", "", width = VERDICT + NAME);
            }
        }
        let _ = match self.strongest {
            true => writeln!(out, "\nThe guardian runs in its strongest mode."),
            false => writeln!(
                out,
                "\nNot the strongest mode: that is a running guardian with tamper protection \
                 bpf-lsm+tracepoints (see the guardian and bpf-lsm lines)."
            ),
        };
        out
    }
}

/// `doctor`: prints the report; an error carrying
/// [`Failure::NotStrongest`] when the strongest mode is not in use.
pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let guardian = match client::status_of(&args.socket.socket) {
        Ok(status) => Guardian::Running(Box::new(status)),
        Err(err) => Guardian::NotReached(format!("{err:#}")),
    };
    let report = Report::of(&Host::default(), &guardian);
    match args.json {
        true => client::output(&serde_json::to_string_pretty(&report)?)?,
        false => client::output(&report.text())?,
    }
    match report.strongest {
        true => Ok(()),
        false => Err(Failure::NotStrongest
            .because("not the strongest protection: see the lines marked weaker or missing")
            .into()),
    }
}

#[cfg(test)]
mod tests;
