//! The kernel link: loads the eBPF programs, keeps the maps of watched leaders
//! and holders in step with the guardian, and reads their events.
//!
//! Needs CAP_BPF and CAP_PERFMON (or root), tracefs, and a kernel with BPF ring
//! buffers (5.8+). When any of that is missing, [`KernelLink::load`] fails with a
//! [`KernelError`] and the guardian runs on pidfds alone (see `status`).

mod attach;
pub mod btf;
mod early_kill;
mod environ;
mod events;
pub mod layout;
mod lsm;
mod offsets;
mod read_paths;
mod secret_files;
pub mod syscalls;
pub mod tracefs;

use std::{
    collections::HashSet,
    os::fd::{AsFd, BorrowedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        RawTracePoint, TracePoint, raw_trace_point::RawTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use guardian_ebpf::{
    HolderState, LEADER_WATCHED, Layout, globals, holder_grant, holder_value, maps, programs,
    ward_leader, ward_value,
};

use crate::os::process::{self, Pid, Uid};

use environ::Environs;

use attach::{
    AYA_LOG_LEVEL, attach_lock_programs, load_lock_programs, program_log_level, start_program_log,
    take_map, without_empty_log,
};
use events::TamperCounters;
use offsets::Offsets;

/// `BPF_NOEXIST`: insert only if the key is new.
const NOEXIST: u64 = 1;
/// Walks of the ward map one forget makes at most.
const MAX_FORGET_WALKS: usize = 4;

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
    /// The attached system-call programs (see [`syscalls`]), empty while
    /// disarmed or in the BPF LSM mode.
    tamper_links: Vec<syscalls::Link>,
    /// The system-call tables they watch.
    tables: syscalls::Tables,
    /// The attached BPF LSM programs, empty while disarmed or without BPF LSM.
    lsm_links: Vec<(&'static str, aya::programs::lsm::LsmLinkId)>,
    /// The attached address-space-lock and io_uring programs, while armed
    /// and available.
    lock_links: Option<(TracePointLinkId, RawTracePointLinkId)>,
    /// Why those programs are not in force here, if they are not.
    lock_error: Option<String>,
    leaders: HashMap<MapData, u32, u32>,
    holders: HashMap<MapData, u32, u64>,
    grant_owners: HashMap<MapData, u32, u32>,
    secret_files: HashMap<MapData, secret_files::Key, u32>,
    early_kill: HashMap<MapData, u32, u32>,
    /// Why the kernel does not kill a leader's holder at its exit, if it does not.
    early_kill_error: Option<String>,
    protected: HashMap<MapData, u32, u32>,
    wards: HashMap<MapData, u32, u64>,
    threads: HashMap<MapData, u32, u32>,
    /// Why the kernel layout could not be read; the read paths stay unarmed.
    layout_error: Option<String>,
    lsm_error: Option<String>,
    dropped: PerCpuArray<MapData, u64>,
    /// Kept open for the supervisor, which inherits it.
    death: RingBuf<MapData>,
    holder_dropped: PerCpuArray<MapData, u64>,
    tamper: TamperCounters,
    environ: Environs,
}

pub use events::EventStream;

impl KernelLink {
    /// Loads every program and attaches the watch programs; the
    /// tracepoint mode's system-call programs will watch `tables`.
    pub fn load(tables: syscalls::Tables) -> Result<(Self, EventStream), KernelError> {
        if OBJECT.is_empty() {
            return Err(KernelError::NotBuilt);
        }
        tracefs::ensure_mounted()?;
        let offsets = Offsets::read()?;
        // Parsed once for both of its readers, and freed before loading.
        let kernel_btf =
            btf::Btf::from_kernel().map_err(|err| format!("cannot read kernel BTF: {err}"));
        let layout_read = kernel_btf
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|btf| layout::read(btf).map_err(|err| err.to_string()));
        let (layout, missing, layout_error) = match layout_read {
            Ok((layout, missing)) => (layout, missing, None),
            Err(err) => ([0; Layout::COUNT], Vec::new(), Some(err)),
        };
        // Where this kernel lacks the kfuncs, the object loads as built and
        // only the early-kill program is left out.
        let resolved = kernel_btf
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|btf| early_kill::Object::resolve(OBJECT, btf));
        drop(kernel_btf);
        let object = resolved.as_ref().map_or(OBJECT, early_kill::Object::bytes);
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
            .override_global(globals::DELIVER_SIG_OFFSET, &offsets.deliver_sig, true)
            .override_global(
                globals::DELIVER_HANDLER_OFFSET,
                &offsets.deliver_handler,
                true,
            )
            .override_global(globals::URING_REQ_OFFSET, &offsets.uring_req, true)
            .override_global(globals::URING_RES_OFFSET, &offsets.uring_res, true)
            .override_global(globals::LAYOUT, &layout, true)
            .override_global(globals::TAMPER_BURST_PER_CPU, &burst_per_cpu(), true)
            .override_global(AYA_LOG_LEVEL, &program_log_level(), true)
            .load(object)?;
        // First on the exit tracepoint, so that the holder's kill is queued
        // before the guardian's wake-up.
        let btf = aya::Btf::from_sys_fs();
        let early_kill_error = match (resolved, &btf) {
            (Ok(_), Ok(btf)) => early_kill::attach(&mut ebpf, &offsets, btf)
                .err()
                .map(without_empty_log),
            (Err(err), _) => Some(err),
            (_, Err(err)) => Some(format!("cannot read kernel BTF: {err}")),
        };
        if let Some(err) = &early_kill_error {
            tracing::info!(%err, "holders are killed by the guardian alone, once it wakes");
        }
        for (name, category, tracepoint) in programs::WATCH {
            attach::loaded::<TracePoint>(&mut ebpf, name)?
                .attach(category, tracepoint)
                .map_err(|source| KernelError::Program { name, source })?;
        }
        // Loaded now, so a verifier refusal shows at start-up; attached by `arm`.
        syscalls::load(&mut ebpf)?;
        if let Some(err) = &layout_error {
            tracing::warn!(%err, "kernel layout unreadable: read paths into holders stay open");
        }
        let lock_error = load_lock_programs(&mut ebpf, &offsets, &missing)
            .err()
            .map(|err| without_empty_log(err.to_string()));
        if let Some(err) = &lock_error {
            tracing::warn!(%err, "io_uring, and reads through descriptors that escape the open check, are not stopped");
        }
        // Preferred where the kernel runs it: it refuses instead of
        // killing, and spares every system call the raw tracepoints.
        let lsm_error = match (&layout_error, &btf) {
            (Some(err), _) => Some(err.clone()),
            (None, Ok(btf)) => lsm::load(&mut ebpf, btf).err(),
            (None, Err(err)) => Some(format!("cannot read kernel BTF: {err}")),
        };
        drop(btf);
        if let Some(err) = &lsm_error {
            tracing::warn!(%err, "BPF LSM unavailable: read paths stopped by syscall tracepoints");
        }
        // After every program is loaded: taking the log map earlier would
        // close the descriptor the later loads refer to.
        if program_log_level() > 0 {
            start_program_log(&mut ebpf);
        }
        let leaders = take_map(&mut ebpf, maps::LEADERS)?;
        let holders = take_map(&mut ebpf, maps::HOLDERS)?;
        let grant_owners = take_map(&mut ebpf, maps::GRANT_OWNERS)?;
        let secret_files = take_map(&mut ebpf, maps::SECRET_FILES)?;
        let early_kill = take_map(&mut ebpf, maps::EARLY_KILL)?;
        let protected = take_map(&mut ebpf, maps::PROTECTED)?;
        let wards = take_map(&mut ebpf, maps::WARDS)?;
        let threads = take_map(&mut ebpf, maps::THREADS)?;
        let dropped = take_map(&mut ebpf, maps::DROPPED)?;
        let holder_dropped = take_map(&mut ebpf, maps::HOLDER_DROPPED)?;
        let death = take_map(&mut ebpf, maps::GUARDIAN_DEATH)?;
        let tamper = TamperCounters {
            rate: take_map(&mut ebpf, maps::TAMPER_RATE)?,
            lost: take_map(&mut ebpf, maps::TAMPER_LOST)?,
        };
        let environ = Environs {
            stamps: take_map(&mut ebpf, maps::ENVIRON_STAMPS)?,
            clean: take_map(&mut ebpf, maps::CLEAN_ENVIRONS)?,
            next_stamp: 0,
        };
        let events = EventStream::new(events::Rings {
            leaders: take_map(&mut ebpf, maps::EVENTS)?,
            holders: take_map(&mut ebpf, maps::HOLDER_EVENTS)?,
            tamper: take_map(&mut ebpf, maps::TAMPER_EVENTS)?,
            environ: take_map(&mut ebpf, maps::ENVIRON_EVENTS)?,
        })
        .map_err(KernelError::Tracefs)?;
        Ok((
            Self {
                ebpf,
                tamper_links: Vec::new(),
                tables,
                lsm_links: Vec::new(),
                lock_links: None,
                lock_error,
                leaders,
                holders,
                grant_owners,
                secret_files,
                early_kill,
                early_kill_error,
                protected,
                wards,
                threads,
                layout_error,
                lsm_error,
                dropped,
                death,
                holder_dropped,
                tamper,
                environ,
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

    /// Stops watching `leader` itself; its session's members stay wards
    /// until [`Self::forget_wards_of`].
    pub fn unwatch_leader(&mut self, leader: Pid) {
        let _ = self.leaders.remove(&(leader.raw() as u32));
        let _ = self.early_kill.remove(&(leader.raw() as u32));
    }

    /// Forgets the members of the sessions of `leaders`: walks of the whole
    /// ward map, several hundred microseconds of CPU each, one for them all.
    pub fn forget_wards_of(&mut self, leaders: &[Pid]) {
        let leaders: HashSet<u32> = leaders.iter().map(|pid| pid.raw() as u32).collect();
        // Again while a walk finds some: a member that forked between a
        // walk and its removal gave its child the mark the walk missed.
        for _ in 0..MAX_FORGET_WALKS {
            let members: Vec<u32> = self
                .wards
                .iter()
                .filter_map(Result::ok)
                .filter(|&(_, ward)| leaders.contains(&ward_leader(ward)))
                .map(|(pid, _)| pid)
                .collect();
            if members.is_empty() {
                return;
            }
            // Not-found is fine: the programs remove members as they exit. A
            // stamp left behind would be taken by a process that reuses the pid.
            for pid in members {
                let _ = self.wards.remove(&pid);
                let _ = self.environ.stamps.remove(&pid);
            }
        }
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

    /// Records `owner` as the uid of `grant`'s holders: one whose uids
    /// change is killed and reported.
    pub fn own_grant(&mut self, grant: u32, owner: Uid) -> Result<(), KernelError> {
        self.grant_owners
            .insert(grant, owner.0, 0)
            .map_err(map_error(maps::GRANT_OWNERS))
    }

    /// Forgets `grant`'s owner, once the grant is gone.
    pub fn forget_grant(&mut self, grant: u32) {
        let _ = self.grant_owners.remove(&grant);
    }

    /// The ring that gets a record when the guardian starts to exit, for
    /// the supervisor to poll (see [`maps::GUARDIAN_DEATH`]).
    pub fn death_notice(&self) -> BorrowedFd<'_> {
        self.death.as_fd()
    }

    /// Protects `pid` (the guardian, its supervisor: `role` says which) from ptrace and
    /// process_vm_readv/writev: callers are SIGKILLed and reported.
    pub fn protect(&mut self, pid: Pid, role: u32) -> Result<(), KernelError> {
        self.protected
            .insert(pid.raw() as u32, role, 0)
            .map_err(map_error(maps::PROTECTED))?;
        self.track_threads(pid)
    }

    /// Every process in the holder map, with its grant: the programs add a
    /// holder's children as they are born and take holders out as they
    /// exit, so this is the kernel's word on who holds what.
    pub fn holders(&self) -> Vec<(Pid, u32)> {
        self.holders
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(pid, value)| Some((Pid::new(pid as i32)?, holder_grant(value))))
            .collect()
    }

    /// Forgets `pid` as a holder.
    pub fn remove_holder(&mut self, pid: Pid) {
        // Not-found is fine: the program removes holders when they exit.
        let _ = self.holders.remove(&(pid.raw() as u32));
    }

    /// Attaches the read-path programs, if they are not attached yet: the
    /// address-space-lock and io_uring programs, then the BPF LSM programs
    /// where the kernel runs them, the system-call programs elsewhere. On
    /// failure none of the latter stays attached.
    pub fn arm(&mut self) -> Result<(), KernelError> {
        if self.is_armed() {
            return Ok(());
        }
        if let Some(err) = &self.layout_error {
            return Err(KernelError::Layout(err.clone()));
        }
        if self.lock_error.is_none() && self.lock_links.is_none() {
            match attach_lock_programs(&mut self.ebpf) {
                Ok(links) => self.lock_links = Some(links),
                Err(err) => {
                    tracing::warn!(%err, "io_uring, and reads through descriptors that escape the open check, are not stopped");
                    self.lock_error = Some(err.to_string());
                }
            }
        }
        let gate = self.lock_links.is_some();
        let attached = match self.lsm_error {
            None => lsm::attach(&mut self.ebpf).map(|links| self.lsm_links = links),
            Some(_) => syscalls::attach(&mut self.ebpf, self.tables, gate)
                .map(|links| self.tamper_links = links),
        };
        attached.inspect_err(|_| self.disarm())
    }

    /// Detaches the read-path programs, giving the machine's syscalls their
    /// fast path back.
    pub fn disarm(&mut self) {
        lsm::detach(&mut self.ebpf, std::mem::take(&mut self.lsm_links));
        syscalls::detach(&mut self.ebpf, std::mem::take(&mut self.tamper_links));
        if let Some((complete, mm_lock)) = self.lock_links.take() {
            if let Ok(program) =
                attach::loaded::<TracePoint>(&mut self.ebpf, programs::IO_URING_COMPLETE.0)
            {
                let _ = program.detach(complete);
            }
            if let Ok(program) =
                attach::loaded::<RawTracePoint>(&mut self.ebpf, programs::MM_LOCK.0)
            {
                let _ = program.detach(mm_lock);
            }
        }
    }

    /// True while the tamper programs are attached.
    pub fn is_armed(&self) -> bool {
        !self.tamper_links.is_empty() || !self.lsm_links.is_empty()
    }

    /// Why the BPF LSM program is not in force, or `None` when it is.
    pub fn lsm_error(&self) -> Option<&str> {
        self.lsm_error.as_deref()
    }
}

/// Tamper records each CPU lets one uid send per second.
fn burst_per_cpu() -> u32 {
    let cpus = aya::util::nr_cpus().map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
    guardian_ebpf::tamper_burst_per_cpu(cpus)
}

/// A `KernelError::Map` maker for the map `name`.
fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}
