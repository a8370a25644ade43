//! The system-call programs of the tracepoint mode (no BPF LSM). Any syscall
//! tracepoint sends every system call of the machine through the kernel's
//! slow path, and a raw one also runs its program on each of them, so they
//! are attached only while armed, in the cheapest form that sees what the
//! policy asks for:
//! - the 64-bit table (`watch_32_bit_syscalls = false`): `syscalls:sys_exit_*`
//!   of the calls the programs judge, which the kernel runs for no other
//!   call;
//! - every table (`watch_32_bit_syscalls = true`): `raw_syscalls:sys_exit`,
//!   since the kernel feeds the per-call tracepoints no 32-bit or x32 call;
//! - without the address-space-lock program, `raw_syscalls:sys_enter` as
//!   well, which then stops process_vm_readv/writev at entry.
//!
//! The opens of a ward's `environ` or `mem` stay judged at exit even where
//! the address-space-lock program stops every read through them: that
//! program knows the file only by the descriptor number the call named,
//! which another thread can point elsewhere while the call waits.

use aya::{
    Ebpf,
    programs::{
        RawTracePoint, TracePoint, raw_trace_point::RawTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use guardian_ebpf::programs::{EXIT_64_CALLS, SYSCALL_ENTER, SYSCALL_EXIT, SYSCALL_EXIT_64};

use super::{KernelError, attach::loaded};

/// Which system-call tables the tracepoint mode watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tables {
    /// The 64-bit table, by per-call tracepoints.
    Native,
    /// The 64-bit, 32-bit and x32 tables, by a raw tracepoint.
    All,
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

/// Attaches the programs for `tables`, with the entry program where the
/// address-space-lock program (`gate`) is not in force. On failure none
/// stays attached.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    tables: Tables,
    gate: bool,
) -> Result<Vec<Link>, KernelError> {
    let mut links = Vec::new();
    match attach_into(ebpf, tables, gate, &mut links) {
        Ok(()) => Ok(links),
        Err(err) => {
            detach(ebpf, links);
            Err(err)
        }
    }
}

fn attach_into(
    ebpf: &mut Ebpf,
    tables: Tables,
    gate: bool,
    links: &mut Vec<Link>,
) -> Result<(), KernelError> {
    if !gate {
        links.push(raw(ebpf, SYSCALL_ENTER)?);
    }
    if tables == Tables::All {
        links.push(raw(ebpf, SYSCALL_EXIT)?);
        return Ok(());
    }
    let (name, category) = SYSCALL_EXIT_64;
    let program = loaded::<TracePoint>(ebpf, name)?;
    for tracepoint in EXIT_64_CALLS {
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
