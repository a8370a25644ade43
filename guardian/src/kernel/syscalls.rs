//! The system-call programs of the tracepoint mode (no BPF LSM). Any syscall
//! tracepoint sends every system call of the machine through the kernel's
//! slow path, and a raw one also runs its program on each of them, so they
//! are attached only while armed, in the cheapest form that sees what the
//! policy asks for:
//! - the 64-bit table (`watch_32_bit_syscalls = false`): `syscalls:sys_exit_*`
//!   of the calls the programs judge, which the kernel runs for no other
//!   call. The opens among them only while a secret file exists, since the
//!   address-space-lock program already stops every read through an
//!   `environ` or `mem` however it was opened;
//! - every table (`watch_32_bit_syscalls = true`): `raw_syscalls:sys_exit`,
//!   since the kernel feeds the per-call tracepoints no 32-bit or x32 call;
//! - without the address-space-lock program, `raw_syscalls:sys_enter` as
//!   well, which then stops process_vm_readv/writev at entry, and the opens
//!   always.

use aya::{
    Ebpf,
    programs::{
        RawTracePoint, TracePoint, raw_trace_point::RawTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use guardian_ebpf::programs::{
    EXIT_64_CALLS, EXIT_64_OPENS, SYSCALL_ENTER, SYSCALL_EXIT, SYSCALL_EXIT_64,
};

use super::{KernelError, attach::loaded};

/// Which system-call tables the tracepoint mode watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tables {
    /// The 64-bit table, by per-call tracepoints.
    Native,
    /// The 64-bit, 32-bit and x32 tables, by a raw tracepoint.
    All,
}

/// What is attached, for `tables`, with or without the address-space-lock
/// program (`gate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) tables: Tables,
    pub(super) gate: bool,
}

impl Plan {
    /// True when the opens are attached only while a secret file exists.
    pub(super) fn opens_on_demand(self) -> bool {
        self.tables == Tables::Native && self.gate
    }
}

/// One attached system-call program.
pub(super) enum Link {
    /// A raw tracepoint program, by name.
    Raw(&'static str, RawTracePointLinkId),
    /// The per-call exit program on one tracepoint.
    PerCall(TracePointLinkId),
}

/// Loads every system-call program, so a verifier refusal shows at start.
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    loaded::<RawTracePoint>(ebpf, SYSCALL_ENTER.0)?;
    loaded::<RawTracePoint>(ebpf, SYSCALL_EXIT.0)?;
    loaded::<TracePoint>(ebpf, SYSCALL_EXIT_64.0)?;
    Ok(())
}

/// Attaches what `plan` keeps attached while armed. On failure none stays
/// attached.
pub(super) fn attach(ebpf: &mut Ebpf, plan: Plan) -> Result<Vec<Link>, KernelError> {
    all_or_none(ebpf, |ebpf, links| {
        if !plan.gate {
            links.push(raw(ebpf, SYSCALL_ENTER)?);
        }
        if plan.tables == Tables::All {
            links.push(raw(ebpf, SYSCALL_EXIT)?);
            return Ok(());
        }
        per_call(ebpf, &EXIT_64_CALLS, links)?;
        match plan.opens_on_demand() {
            true => Ok(()),
            false => per_call(ebpf, &EXIT_64_OPENS, links),
        }
    })
}

/// Attaches the per-call opens, while a secret file exists.
pub(super) fn attach_opens(ebpf: &mut Ebpf) -> Result<Vec<Link>, KernelError> {
    all_or_none(ebpf, |ebpf, links| per_call(ebpf, &EXIT_64_OPENS, links))
}

/// Runs `attach`; if it fails, detaches what it attached.
fn all_or_none(
    ebpf: &mut Ebpf,
    attach: impl FnOnce(&mut Ebpf, &mut Vec<Link>) -> Result<(), KernelError>,
) -> Result<Vec<Link>, KernelError> {
    let mut links = Vec::new();
    match attach(ebpf, &mut links) {
        Ok(()) => Ok(links),
        Err(err) => {
            detach(ebpf, links);
            Err(err)
        }
    }
}

fn per_call(ebpf: &mut Ebpf, calls: &[&str], links: &mut Vec<Link>) -> Result<(), KernelError> {
    let (name, category) = SYSCALL_EXIT_64;
    let program = loaded::<TracePoint>(ebpf, name)?;
    for tracepoint in calls {
        let link = program
            .attach(category, tracepoint)
            .map_err(|source| KernelError::Program { name, source })?;
        links.push(Link::PerCall(link));
    }
    Ok(())
}

fn raw(ebpf: &mut Ebpf, (name, tracepoint): (&'static str, &str)) -> Result<Link, KernelError> {
    loaded::<RawTracePoint>(ebpf, name)?
        .attach(tracepoint)
        .map(|link| Link::Raw(name, link))
        .map_err(|source| KernelError::Program { name, source })
}

/// Detaches `links`, giving the machine's system calls their fast path back.
pub(super) fn detach(ebpf: &mut Ebpf, links: Vec<Link>) {
    for link in links {
        match link {
            Link::Raw(name, link) => {
                if let Ok(program) = loaded::<RawTracePoint>(ebpf, name) {
                    let _ = program.detach(link);
                }
            }
            Link::PerCall(link) => {
                if let Ok(program) = loaded::<TracePoint>(ebpf, SYSCALL_EXIT_64.0) {
                    let _ = program.detach(link);
                }
            }
        }
    }
}
