//! The kernel link: loads the eBPF programs, keeps the maps of watched leaders
//! and holders in step with the guardian, and reads their events.
//!
//! Needs CAP_BPF and CAP_PERFMON (or root), tracefs, and a kernel with BPF ring
//! buffers (5.8+). When any of that is missing, [`KernelLink::load`] fails with a
//! [`KernelError`] and the guardian runs on pidfds alone (see `status`).

pub mod btf;
pub mod tracefs;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{Lsm, TracePoint, trace_point::TracePointLinkId},
};
use guardian_ebpf::{
    Event, HolderState, LEADER_WATCHED, NO_FIELD, globals, holder_value, maps, programs,
};
use tokio::io::{Interest, unix::AsyncFd};

use crate::os::process::Pid;

/// The compiled programs, embedded by build.rs (empty when not built).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guardian-ebpf.o"));

/// Why the eBPF link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The operator asked for no eBPF (`guard --no-ebpf`).
    #[error("eBPF switched off with --no-ebpf")]
    Disabled,
    /// This binary was built without the eBPF object.
    #[error("eBPF programs were not built into this binary (build with `cargo xtask build`)")]
    NotBuilt,
    /// tracefs is missing or a tracepoint format could not be read.
    #[error("cannot read tracepoint formats: {0}")]
    Tracefs(#[from] std::io::Error),
    /// The object could not be loaded (no CAP_BPF, verifier refusal, ...).
    #[error("cannot load eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program could not be loaded or attached; the verifier log is kept.
    #[error("cannot load or attach program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// The error from aya, with the verifier log where there is one.
        source: aya::programs::ProgramError,
    },
    /// A map is missing or has the wrong type.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// The error from aya.
        source: aya::maps::MapError,
    },
    /// Kernel BTF is missing or unreadable (needed by the BPF LSM program).
    #[error("cannot read kernel BTF: {0}")]
    Btf(#[from] aya::BtfError),
    /// The object lacks a program or map the guardian expects.
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
}

/// The loaded programs and the maps the guardian writes.
pub struct KernelLink {
    // Dropping the Ebpf detaches the programs, so it lives as long as the link.
    ebpf: Ebpf,
    /// The attached tamper programs (see [`programs::TAMPER`]), empty while disarmed.
    tamper_links: Vec<(&'static str, TracePointLinkId)>,
    leaders: HashMap<MapData, u32, u32>,
    holders: HashMap<MapData, u32, u64>,
    protected: HashMap<MapData, u32, u32>,
    lsm_error: Option<String>,
    dropped: PerCpuArray<MapData, u64>,
}

/// The ring buffer the programs write events to, ready for async reads.
pub type EventStream = AsyncFd<RingBuf<MapData>>;

impl KernelLink {
    /// Loads and attaches every program.
    pub fn load() -> Result<(Self, EventStream), KernelError> {
        if OBJECT.is_empty() {
            return Err(KernelError::NotBuilt);
        }
        tracefs::ensure_mounted()?;
        let offsets = Offsets::read()?;
        let mut ebpf = EbpfLoader::new()
            .override_global(
                globals::EXIT_GROUP_DEAD_OFFSET,
                &offsets.exit_group_dead,
                true,
            )
            .override_global(globals::NEWTASK_PID_OFFSET, &offsets.newtask_pid, true)
            .override_global(
                globals::NEWTASK_CLONE_FLAGS_OFFSET,
                &offsets.newtask_clone_flags,
                true,
            )
            .override_global(globals::SIGNAL_SIG_OFFSET, &offsets.signal_sig, true)
            .override_global(globals::SIGNAL_PID_OFFSET, &offsets.signal_pid, true)
            .override_global(
                globals::PTRACE_REQUEST_OFFSET,
                &offsets.ptrace_request,
                true,
            )
            .override_global(globals::PTRACE_PID_OFFSET, &offsets.ptrace_pid, true)
            .override_global(globals::VM_PID_OFFSET, &offsets.vm_pid, true)
            .override_global(globals::TASK_TGID_OFFSET, &offsets.task_tgid, true)
            .load(OBJECT)?;
        for (name, category, tracepoint) in programs::WATCH {
            tracepoint_mut(&mut ebpf, name)?
                .attach(category, tracepoint)
                .map_err(|source| KernelError::Program { name, source })?;
        }
        // Loaded now, so a verifier refusal shows at start-up; attached by `arm`.
        for (name, _, _) in programs::TAMPER {
            tracepoint_mut(&mut ebpf, name)?;
        }
        // Preferred where it loads (it also covers /proc/PID/mem and environ);
        // the tracepoints above stay as the fallback either way.
        let lsm_error = match offsets.task_tgid {
            NO_FIELD => Some("task_struct.tgid not found in kernel BTF".to_owned()),
            _ => attach_lsm(&mut ebpf)
                .err()
                .map(|err| without_empty_log(err.to_string())),
        };
        if let Some(err) = &lsm_error {
            tracing::warn!(%err, "BPF LSM unavailable: ptrace/process_vm_* stopped by tracepoints only");
        }
        let leaders = take_map(&mut ebpf, maps::LEADERS)?;
        let holders = take_map(&mut ebpf, maps::HOLDERS)?;
        let protected = take_map(&mut ebpf, maps::PROTECTED)?;
        let dropped = take_map(&mut ebpf, maps::DROPPED)?;
        let ring: RingBuf<MapData> = take_map(&mut ebpf, maps::EVENTS)?;
        // SAFETY: the ring buffer owns its map fd, which stays open and the same
        // for as long as the RingBuf (now owned by the AsyncFd) lives.
        let events = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| KernelError::Tracefs(err.into()))?;
        Ok((
            Self {
                ebpf,
                tamper_links: Vec::new(),
                leaders,
                holders,
                protected,
                lsm_error,
                dropped,
            },
            events,
        ))
    }

    /// Starts reporting the exit and hangup of `leader`.
    pub fn watch_leader(&mut self, leader: Pid) -> Result<(), KernelError> {
        self.leaders
            .insert(leader.raw() as u32, LEADER_WATCHED, 0)
            .map_err(|source| KernelError::Map {
                name: maps::LEADERS,
                source,
            })
    }

    /// Stops watching `leader`.
    pub fn unwatch_leader(&mut self, leader: Pid) {
        // Not-found is fine: the entry may never have been added.
        let _ = self.leaders.remove(&(leader.raw() as u32));
    }

    /// Marks `pid` as a holder of `grant` in `state`; its future children inherit both.
    pub fn set_holder(
        &mut self,
        pid: Pid,
        grant: u32,
        state: HolderState,
    ) -> Result<(), KernelError> {
        self.holders
            .insert(pid.raw() as u32, holder_value(grant, state), 0)
            .map_err(|source| KernelError::Map {
                name: maps::HOLDERS,
                source,
            })
    }

    /// Protects `pid` (the guardian, its supervisor) from ptrace and
    /// process_vm_readv/writev: callers are SIGKILLed and reported.
    pub fn protect(&mut self, pid: Pid) -> Result<(), KernelError> {
        self.protected
            .insert(pid.raw() as u32, 1, 0)
            .map_err(|source| KernelError::Map {
                name: maps::PROTECTED,
                source,
            })
    }

    /// Forgets `pid` as a holder.
    pub fn remove_holder(&mut self, pid: Pid) {
        // Not-found is fine: the program removes holders when they exit.
        let _ = self.holders.remove(&(pid.raw() as u32));
    }

    /// Attaches the tamper programs (ptrace, process_vm_readv/writev entry),
    /// if they are not attached yet. On failure none stays attached.
    pub fn arm(&mut self) -> Result<(), KernelError> {
        if self.is_armed() {
            return Ok(());
        }
        for (name, category, tracepoint) in programs::TAMPER {
            let attached = tracepoint_mut(&mut self.ebpf, name)?
                .attach(category, tracepoint)
                .map_err(|source| KernelError::Program { name, source });
            match attached {
                Ok(link) => self.tamper_links.push((name, link)),
                Err(err) => {
                    self.disarm();
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Detaches the tamper programs, giving the machine's syscalls their fast
    /// path back.
    pub fn disarm(&mut self) {
        for (name, link) in std::mem::take(&mut self.tamper_links) {
            if let Ok(program) = tracepoint_mut(&mut self.ebpf, name) {
                let _ = program.detach(link);
            }
        }
    }

    /// True while the tamper programs are attached.
    pub fn is_armed(&self) -> bool {
        !self.tamper_links.is_empty()
    }

    /// Why the BPF LSM program is not in force, or `None` when it is.
    pub fn lsm_error(&self) -> Option<&str> {
        self.lsm_error.as_deref()
    }

    /// Events the programs dropped because the ring buffer was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped
            .get(&0, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }
}

/// Reads every event waiting in the ring buffer.
pub fn drain(ring: &mut RingBuf<MapData>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(event) = Event::from_bytes(&item) {
            events.push(event);
        }
    }
    events
}

/// aya ends a load error with "Verifier output: " and the log; when the kernel
/// refused before the verifier ran, the log is empty and the label misleads.
fn without_empty_log(message: String) -> String {
    match message.strip_suffix("Verifier output: ") {
        Some(rest) => rest.trim_end().trim_end_matches('.').to_owned(),
        None => message,
    }
}

/// The loaded tracepoint program `name` (loading it on first use).
fn tracepoint_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut TracePoint, KernelError> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })?;
    if program.fd().is_err() {
        program
            .load()
            .map_err(|source| KernelError::Program { name, source })?;
    }
    Ok(program)
}

fn attach_lsm(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    let name = programs::PTRACE_ACCESS_CHECK;
    let btf = aya::Btf::from_sys_fs()?;
    let program: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })?;
    program
        .load(name, &btf)
        .map_err(|source| KernelError::Program { name, source })?;
    program
        .attach()
        .map_err(|source| KernelError::Program { name, source })?;
    Ok(())
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, KernelError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::Missing(name))?;
    M::try_from(map).map_err(|source| KernelError::Map { name, source })
}

/// Tracepoint field offsets of the running kernel.
struct Offsets {
    exit_group_dead: u32,
    newtask_pid: u32,
    newtask_clone_flags: u32,
    signal_sig: u32,
    signal_pid: u32,
    ptrace_request: u32,
    ptrace_pid: u32,
    vm_pid: u32,
    task_tgid: u32,
}

impl Offsets {
    fn read() -> std::io::Result<Self> {
        let exit = tracefs::Format::read("sched", "sched_process_exit")?;
        let newtask = tracefs::Format::read("task", "task_newtask")?;
        let signal = tracefs::Format::read("signal", "signal_generate")?;
        let ptrace = tracefs::Format::read("syscalls", "sys_enter_ptrace")?;
        let readv = tracefs::Format::read("syscalls", "sys_enter_process_vm_readv")?;
        let writev = tracefs::Format::read("syscalls", "sys_enter_process_vm_writev")?;
        let vm_pid = readv.require("pid")?;
        if writev.require("pid")? != vm_pid {
            return Err(std::io::Error::other(
                "process_vm_readv and _writev differ in layout",
            ));
        }
        Ok(Self {
            exit_group_dead: exit.offset("group_dead").unwrap_or(NO_FIELD),
            newtask_pid: newtask.require("pid")?,
            newtask_clone_flags: newtask.require("clone_flags")?,
            signal_sig: signal.require("sig")?,
            signal_pid: signal.require("pid")?,
            ptrace_request: ptrace.require("request")?,
            ptrace_pid: ptrace.require("pid")?,
            vm_pid,
            task_tgid: btf::member_offset("task_struct", "tgid").unwrap_or(NO_FIELD),
        })
    }
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
