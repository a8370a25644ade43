//! The guardian's log on standard error: for a terminal, tracing's usual
//! lines; under systemd, whose journal stamps each line with its own time
//! and colours it by priority, plain lines led by a syslog priority
//! (`<3>` error ... `<7>` debug), so that nothing shows twice.

#![forbid(unsafe_code)]

use std::{fmt, io::IsTerminal, os::fd::AsFd};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Installs the logger: `RUST_LOG` sets the level (default info).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match stderr_is_journal() {
        true => builder.with_ansi(false).event_format(Journal).init(),
        false => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// True when standard error is the stream systemd connected to the journal:
/// it names that stream's device and inode in `JOURNAL_STREAM`, which a
/// child inheriting the variable but not the stream would not match.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", stat.st_dev, stat.st_ino))
}

/// One journal line: `<priority>target: message fields`.
struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        write!(
            writer,
            "<{}>{}: ",
            priority(*metadata.level()),
            metadata.target()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The syslog priority of a level.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}
