//! The kernel link: loads the eBPF programs, keeps the maps of watched leaders
//! and holders in step with the guardian, and reads their events.
//!
//! Needs CAP_BPF and CAP_PERFMON (or root), tracefs, and a kernel with BPF ring
//! buffers (5.8+). When any of that is missing, [`KernelLink::load`] fails with a
//! [`KernelError`] and the guardian runs on pidfds alone (see `status`).

pub mod btf;
pub mod layout;
pub mod tracefs;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        Lsm, RawTracePoint, TracePoint, raw_trace_point::RawTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use guardian_ebpf::{
    Event, HolderState, LEADER_WATCHED, Layout, NO_FIELD, globals, holder_value, maps, programs,
    ward_leader, ward_value,
};
use tokio::io::{Interest, unix::AsyncFd};

use crate::os::process::{self, Pid, Uid};

/// `BPF_NOEXIST`: insert only if the key is new.
const NOEXIST: u64 = 1;

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
    /// The kernel's struct layout or symbols could not be read, so the
    /// read-path programs cannot be armed.
    #[error("cannot arm the read-path programs: {0}")]
    Layout(String),
}

/// The loaded programs and the maps the guardian writes.
pub struct KernelLink {
    // Dropping the Ebpf detaches the programs, so it lives as long as the link.
    ebpf: Ebpf,
    /// The attached read-path programs (see [`programs::TAMPER`]), empty while disarmed.
    tamper_links: Vec<(&'static str, RawTracePointLinkId)>,
    /// The attached address-space-lock and io_uring programs, while armed
    /// and available.
    lock_links: Option<(TracePointLinkId, RawTracePointLinkId)>,
    /// Why those programs are not in force here, if they are not.
    lock_error: Option<String>,
    leaders: HashMap<MapData, u32, u32>,
    holders: HashMap<MapData, u32, u64>,
    protected: HashMap<MapData, u32, u32>,
    wards: HashMap<MapData, u32, u64>,
    threads: HashMap<MapData, u32, u32>,
    /// Why the kernel layout could not be read; the read paths stay unarmed.
    layout_error: Option<String>,
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
        let (layout, missing, layout_error) = match layout::read() {
            Ok((layout, missing)) => (layout, missing, None),
            Err(err) => ([0; Layout::COUNT], Vec::new(), Some(err.to_string())),
        };
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
            .override_global(globals::URING_REQ_OFFSET, &offsets.uring_req, true)
            .override_global(globals::URING_RES_OFFSET, &offsets.uring_res, true)
            .override_global(globals::LAYOUT, &layout, true)
            .override_global(AYA_LOG_LEVEL, &program_log_level(), true)
            .load(OBJECT)?;
        for (name, category, tracepoint) in programs::WATCH {
            tracepoint_mut(&mut ebpf, name)?
                .attach(category, tracepoint)
                .map_err(|source| KernelError::Program { name, source })?;
        }
        // Loaded now, so a verifier refusal shows at start-up; attached by `arm`.
        for (name, _) in programs::TAMPER {
            raw_tracepoint_mut(&mut ebpf, name)?;
        }
        if let Some(err) = &layout_error {
            tracing::warn!(%err, "kernel layout unreadable: read paths into holders stay open");
        }
        let lock_error = load_lock_programs(&mut ebpf, &offsets, &missing)
            .err()
            .map(|err| without_empty_log(err.to_string()));
        if let Some(err) = &lock_error {
            tracing::warn!(%err, "io_uring, and reads through descriptors that escape the open check, are not stopped");
        }
        // Preferred where it loads: it refuses instead of killing. The raw
        // syscall tracepoints stay as the fallback either way.
        let lsm_error = match &layout_error {
            Some(err) => Some(err.clone()),
            None => attach_lsm(&mut ebpf)
                .err()
                .map(|err| without_empty_log(err.to_string())),
        };
        if let Some(err) = &lsm_error {
            tracing::warn!(%err, "BPF LSM unavailable: read paths stopped by raw syscall tracepoints only");
        }
        // After every program is loaded: taking the log map earlier would
        // close the descriptor the later loads refer to.
        if program_log_level() > 0 {
            start_program_log(&mut ebpf);
        }
        let leaders = take_map(&mut ebpf, maps::LEADERS)?;
        let holders = take_map(&mut ebpf, maps::HOLDERS)?;
        let protected = take_map(&mut ebpf, maps::PROTECTED)?;
        let wards = take_map(&mut ebpf, maps::WARDS)?;
        let threads = take_map(&mut ebpf, maps::THREADS)?;
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
                lock_links: None,
                lock_error,
                leaders,
                holders,
                protected,
                wards,
                threads,
                layout_error,
                lsm_error,
                dropped,
            },
            events,
        ))
    }

    /// Starts reporting the exit and hangup of `leader`, and protects every
    /// process that may ask for its secrets (its session `sid` and its
    /// descendants, as `owner`'s) from read paths by other processes.
    pub fn watch_leader(
        &mut self,
        leader: Pid,
        sid: Option<Pid>,
        owner: Uid,
    ) -> Result<(), KernelError> {
        self.leaders
            .insert(leader.raw() as u32, LEADER_WATCHED, 0)
            .map_err(map_error(maps::LEADERS))?;
        let ward = ward_value(owner.0, leader.raw() as u32);
        // Twice: a child that a member forked before the first pass marked it
        // is found by the second. From then on the programs mark children as
        // they are born. A process already a ward of another leader keeps it.
        for _ in 0..2 {
            for member in process::session_members(leader, sid) {
                match self.wards.insert(member.raw() as u32, ward, NOEXIST) {
                    Ok(()) => self.track_threads(member)?,
                    Err(aya::maps::MapError::SyscallError(err))
                        if err.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(source) => return Err(map_error(maps::WARDS)(source)),
                }
            }
        }
        Ok(())
    }

    /// Stops watching `leader`, and protecting its session.
    pub fn unwatch_leader(&mut self, leader: Pid) {
        let members: Vec<u32> = self
            .wards
            .iter()
            .filter_map(Result::ok)
            .filter(|&(_, ward)| ward_leader(ward) == leader.raw() as u32)
            .map(|(pid, _)| pid)
            .collect();
        // Not-found is fine: the programs remove members as they exit.
        for pid in members {
            let _ = self.wards.remove(&pid);
        }
        let _ = self.leaders.remove(&(leader.raw() as u32));
    }

    /// Records `pid`'s existing threads, so an attack aimed at a thread id counts.
    fn track_threads(&mut self, pid: Pid) -> Result<(), KernelError> {
        for tid in process::other_threads(pid) {
            self.threads
                .insert(tid.raw() as u32, pid.raw() as u32, 0)
                .map_err(map_error(maps::THREADS))?;
        }
        Ok(())
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
            .map_err(map_error(maps::HOLDERS))
    }

    /// Protects `pid` (the guardian, its supervisor) from ptrace and
    /// process_vm_readv/writev: callers are SIGKILLed and reported.
    pub fn protect(&mut self, pid: Pid) -> Result<(), KernelError> {
        self.protected
            .insert(pid.raw() as u32, 1, 0)
            .map_err(map_error(maps::PROTECTED))?;
        self.track_threads(pid)
    }

    /// Forgets `pid` as a holder.
    pub fn remove_holder(&mut self, pid: Pid) {
        // Not-found is fine: the program removes holders when they exit.
        let _ = self.holders.remove(&(pid.raw() as u32));
    }

    /// Attaches the read-path programs, if they are not attached yet. On
    /// failure none stays attached.
    pub fn arm(&mut self) -> Result<(), KernelError> {
        if self.is_armed() {
            return Ok(());
        }
        if let Some(err) = &self.layout_error {
            return Err(KernelError::Layout(err.clone()));
        }
        for (name, tracepoint) in programs::TAMPER {
            let attached = raw_tracepoint_mut(&mut self.ebpf, name)?
                .attach(tracepoint)
                .map_err(|source| KernelError::Program { name, source });
            match attached {
                Ok(link) => self.tamper_links.push((name, link)),
                Err(err) => {
                    self.disarm();
                    return Err(err);
                }
            }
        }
        if self.lock_error.is_none() {
            match attach_lock_programs(&mut self.ebpf) {
                Ok(links) => self.lock_links = Some(links),
                Err(err) => {
                    tracing::warn!(%err, "io_uring, and reads through descriptors that escape the open check, are not stopped");
                    self.lock_error = Some(err.to_string());
                }
            }
        }
        Ok(())
    }

    /// Detaches the read-path programs, giving the machine's syscalls their
    /// fast path back.
    pub fn disarm(&mut self) {
        for (name, link) in std::mem::take(&mut self.tamper_links) {
            if let Ok(program) = raw_tracepoint_mut(&mut self.ebpf, name) {
                let _ = program.detach(link);
            }
        }
        if let Some((complete, mm_lock)) = self.lock_links.take() {
            if let Ok(program) = tracepoint_mut(&mut self.ebpf, programs::IO_URING_COMPLETE.0) {
                let _ = program.detach(complete);
            }
            if let Ok(program) = raw_tracepoint_mut(&mut self.ebpf, programs::MM_LOCK.0) {
                let _ = program.detach(mm_lock);
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

    /// Which read paths the programs stop, and which stay open here.
    pub fn read_paths(&self) -> crate::protocol::ReadPaths {
        let mut paths = crate::protocol::ReadPaths::default();
        if let Some(err) = &self.layout_error {
            paths
                .open
                .push(format!("all but leader and holder tracking: {err}"));
            return paths;
        }
        paths.stopped = [
            "ptrace attach and seize (64-bit, x32 and 32-bit tables; any pid namespace)",
            "process_vm_readv/writev (all three tables; callers in the initial pid namespace)",
            "pidfd_getfd",
            "perf_event_open sampling a ward (callers in the initial pid namespace)",
            "open of /proc/PID/environ and /proc/PID/mem, task/TID too, by any path or dirfd",
        ]
        .map(str::to_owned)
        .to_vec();
        match &self.lock_error {
            None => paths.stopped.extend(
                [
                    "any read or write through a ward's environ or mem, however the descriptor \
                     was obtained, and process_vm_* or ptrace memory access from any pid \
                     namespace (at the address-space lock)",
                    "io_uring: an open returning a descriptor, and any io_uring read of a ward's \
                     memory",
                ]
                .map(str::to_owned),
            ),
            Some(err) => {
                paths.open.push(format!(
                    "descriptors that escape the open check (a racing thread or sharer), and \
                     process_vm_* from other pid namespaces ({err})"
                ));
                paths
                    .open
                    .extend(io_uring_gap().map(|open| format!("{open} ({err})")));
            }
        }
        paths
    }

    /// Events the programs dropped because the ring buffer was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped
            .get(&0, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }
}

/// Loads the address-space-lock and io_uring programs, which need fields
/// some kernels lack.
fn load_lock_programs(
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
    tracepoint_mut(ebpf, programs::IO_URING_COMPLETE.0)?;
    raw_tracepoint_mut(ebpf, programs::MM_LOCK.0)?;
    Ok(())
}

fn attach_lock_programs(
    ebpf: &mut Ebpf,
) -> Result<(TracePointLinkId, RawTracePointLinkId), KernelError> {
    let (name, category, tracepoint) = programs::IO_URING_COMPLETE;
    let complete = tracepoint_mut(ebpf, name)?
        .attach(category, tracepoint)
        .map_err(|source| KernelError::Program { name, source })?;
    let (name, tracepoint) = programs::MM_LOCK;
    let mm_lock = raw_tracepoint_mut(ebpf, name)?.attach(tracepoint);
    match mm_lock {
        Ok(link) => Ok((complete, link)),
        Err(source) => {
            if let Ok(program) = tracepoint_mut(ebpf, programs::IO_URING_COMPLETE.0) {
                let _ = program.detach(complete);
            }
            Err(KernelError::Program { name, source })
        }
    }
}

/// While unprivileged users may create io_uring rings and the
/// address-space-lock and io_uring programs are not in force, io_uring is a
/// way around the others.
fn io_uring_gap() -> Option<String> {
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

/// A `KernelError::Map` maker for the map `name`.
fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

/// aya-log's global in the programs: the most verbose level they write.
const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

/// Debug (aya-log's level 4) when the guardian logs at debug level; else 0,
/// which turns every log statement in the programs into one global read.
fn program_log_level() -> u8 {
    match tracing::enabled!(tracing::Level::DEBUG) {
        true => 4,
        false => 0,
    }
}

/// Sends the programs' own diagnostics (aya-log) to the guardian's log at
/// debug level. Left off otherwise: the programs only log on error paths, so
/// an unread log costs nothing on the hot path.
fn start_program_log(ebpf: &mut Ebpf) {
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

/// The loaded raw tracepoint program `name` (loading it on first use).
fn raw_tracepoint_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut RawTracePoint, KernelError> {
    let program: &mut RawTracePoint = ebpf
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
    uring_req: u32,
    uring_res: u32,
}

impl Offsets {
    fn read() -> std::io::Result<Self> {
        let exit = tracefs::Format::read("sched", "sched_process_exit")?;
        let newtask = tracefs::Format::read("task", "task_newtask")?;
        let signal = tracefs::Format::read("signal", "signal_generate")?;
        let uring = tracefs::Format::read("io_uring", "io_uring_complete").ok();
        let uring_field = |name| {
            uring
                .as_ref()
                .and_then(|f| f.offset(name))
                .unwrap_or(NO_FIELD)
        };
        Ok(Self {
            exit_group_dead: exit.offset("group_dead").unwrap_or(NO_FIELD),
            newtask_pid: newtask.require("pid")?,
            newtask_clone_flags: newtask.require("clone_flags")?,
            signal_sig: signal.require("sig")?,
            signal_pid: signal.require("pid")?,
            uring_req: uring_field("req"),
            uring_res: uring_field("res"),
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
