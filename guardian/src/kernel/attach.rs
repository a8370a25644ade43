//! Loading and attaching the programs: the generic loader, the optional
//! address-space-lock and io_uring programs, and the programs' own log
//! (aya-log). The BPF LSM programs have `lsm` of their own.

use aya::{
    Ebpf,
    programs::{
        BtfTracePoint, Program, ProgramError, RawTracePoint, TracePoint,
        raw_trace_point::RawTracePointLinkId, trace_point::TracePointLinkId,
    },
};
use guardian_ebpf::{NO_FIELD, programs};
use tokio::io::{Interest, unix::AsyncFd};

use super::{KernelError, offsets::Offsets};

/// Loads the address-space-lock and io_uring programs, which need fields
/// some kernels lack.
pub(super) fn load_lock_programs(
    ebpf: &mut Ebpf,
    offsets: &Offsets,
    missing: &[String],
) -> Result<(), KernelError> {
    if let Some(err) = missing.first() {
        return Err(KernelError::Layout(err.clone()));
    }
    if offsets.uring_req == NO_FIELD || offsets.uring_res == NO_FIELD {
        return Err(KernelError::Layout(
            "no io_uring:io_uring_complete tracepoint".to_owned(),
        ));
    }
    loaded::<TracePoint>(ebpf, programs::IO_URING_COMPLETE.0)?;
    loaded::<RawTracePoint>(ebpf, programs::MM_LOCK.0)?;
    Ok(())
}

pub(super) fn attach_lock_programs(
    ebpf: &mut Ebpf,
) -> Result<(TracePointLinkId, RawTracePointLinkId), KernelError> {
    let (name, category, tracepoint) = programs::IO_URING_COMPLETE;
    let complete = loaded::<TracePoint>(ebpf, name)?
        .attach(category, tracepoint)
        .map_err(|source| KernelError::Program { name, source })?;
    let (name, tracepoint) = programs::MM_LOCK;
    let mm_lock = loaded::<RawTracePoint>(ebpf, name)?.attach(tracepoint);
    match mm_lock {
        Ok(link) => Ok((complete, link)),
        Err(source) => {
            if let Ok(program) = loaded::<TracePoint>(ebpf, programs::IO_URING_COMPLETE.0) {
                let _ = program.detach(complete);
            }
            Err(KernelError::Program { name, source })
        }
    }
}

/// While unprivileged users may create io_uring rings and the
/// address-space-lock and io_uring programs are not in force, io_uring is a
/// way around the others.
pub(super) fn io_uring_gap() -> Option<String> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|value| value.trim().parse::<u8>().ok());
    match disabled {
        Some(2) | None => None,
        Some(_) => Some(
            "io_uring opens and reads of /proc/PID/environ and mem: \
             set sysctl kernel.io_uring_disabled=2 to close"
                .to_owned(),
        ),
    }
}

/// aya ends a load error with "Verifier output: " and the log; when the kernel
/// refused before the verifier ran, the log is empty and the label misleads.
pub(super) fn without_empty_log(message: String) -> String {
    match message.strip_suffix("Verifier output: ") {
        Some(rest) => rest.trim_end().trim_end_matches('.').to_owned(),
        None => message,
    }
}

/// aya-log's global in the programs: the most verbose level they write.
pub(super) const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

/// Debug (aya-log's level 4) when the guardian logs at debug level; else 0,
/// which turns every log statement in the programs into one global read.
pub(super) fn program_log_level() -> u8 {
    match tracing::enabled!(tracing::Level::DEBUG) {
        true => 4,
        false => 0,
    }
}

/// Sends the programs' own diagnostics (aya-log) to the guardian's log at
/// debug level. Left off otherwise: the programs only log on error paths, so
/// an unread log costs nothing on the hot path.
pub(super) fn start_program_log(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(err) => return tracing::debug!(%err, "eBPF program log unavailable"),
    };
    // SAFETY: the logger owns its ring buffer's fd, which stays open and the
    // same for as long as the logger (now owned by the AsyncFd) lives.
    let mut logger = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(logger) => logger,
        Err(err) => return tracing::debug!(%err, "eBPF program log unavailable"),
    };
    tokio::spawn(async move {
        while let Ok(mut ready) = logger.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
}

/// A program type loaded without BTF.
pub(super) trait Plain {
    /// True once loaded into the kernel.
    fn is_loaded(&self) -> bool;
    /// Loads it.
    fn load_now(&mut self) -> Result<(), ProgramError>;
}

impl Plain for TracePoint {
    fn is_loaded(&self) -> bool {
        self.fd().is_ok()
    }

    fn load_now(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

impl Plain for RawTracePoint {
    fn is_loaded(&self) -> bool {
        self.fd().is_ok()
    }

    fn load_now(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

/// The program `name`, as a `P` (a tracepoint or raw tracepoint), loaded on
/// first use.
pub(super) fn loaded<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut P, KernelError>
where
    P: Plain,
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program: &mut P = ebpf
        .program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })?;
    if !program.is_loaded() {
        program
            .load_now()
            .map_err(|source| KernelError::Program { name, source })?;
    }
    Ok(program)
}

/// A program type loaded against the kernel's BTF (its hook or tracepoint
/// is found there), attached for the guardian's whole life.
pub(super) trait WithBtf {
    /// Loads it for `target`.
    fn load_for(&mut self, target: &str, btf: &aya::Btf) -> Result<(), ProgramError>;
    /// Attaches it; the link lives as long as the program.
    fn attach_now(&mut self) -> Result<(), ProgramError>;
}

impl WithBtf for BtfTracePoint {
    fn load_for(&mut self, target: &str, btf: &aya::Btf) -> Result<(), ProgramError> {
        self.load(target, btf)
    }

    fn attach_now(&mut self) -> Result<(), ProgramError> {
        self.attach().map(drop)
    }
}

/// Loads program `name` as a `P` for `target` and attaches it.
pub(super) fn attach_btf_program<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    target: &str,
    btf: &aya::Btf,
) -> Result<(), KernelError>
where
    P: WithBtf + 'a,
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program: &mut P = ebpf
        .program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })?;
    program
        .load_for(target, btf)
        .and_then(|()| program.attach_now())
        .map_err(|source| KernelError::Program { name, source })
}

pub(super) fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, KernelError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::Missing(name))?;
    M::try_from(map).map_err(|source| KernelError::Map { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_verifier_log_is_not_announced() {
        let refused = "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). \
                       Verifier output: ";
        assert_eq!(
            without_empty_log(refused.to_owned()),
            "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)"
        );
        let verified = "load failed. Verifier output: R1 invalid mem access";
        assert_eq!(without_empty_log(verified.to_owned()), verified);
    }
}
