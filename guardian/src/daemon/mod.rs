//! `ningen-shikkaku guard`: sets the guardian up (hardening, audit log, eBPF,
//! cgroups, supervisor, socket) and runs it: the [`server`] accepts
//! connections and turns their bytes into messages, and the loop here feeds
//! those messages and the kernel's events to the [`state`] machine, which
//! owns everything.
//!
//! - [`state`]: the secrets, sessions and every rule;
//! - [`server`]: bind, accept, one task per connection, and its framing I/O;
//!   [`slots`]: how many connections, and how many per user;
//! - [`supervisor`]: the process that kills every holder if the guardian dies;
//! - [`logind`]: screen lock and suspend, from logind on the system bus.

pub mod logind;
pub mod server;
pub mod slots;
pub mod state;
pub mod supervisor;

use std::{
    fs,
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use guardian_ebpf::{PROTECTED_GUARDIAN, PROTECTED_OTHER};
use nix::sys::signal::{self as nix_signal, SigHandler, Signal};
use sd_notify::NotifyState;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use self::state::{Core, Msg, Paths, Setup, budget::Budget, host::Host};
use crate::{
    audit::{AuditLog, Rotation, commit},
    cli::DEFAULT_CONFIG,
    config::Config,
    kernel::{self, KernelLink},
    os::{
        cgroup::Cgroups,
        fuse, hardening,
        process::{Pid, Pidfd},
        socket_path,
    },
};

/// Most messages handled between two audit fdatasyncs.
const BATCH: usize = 256;
/// How often the holder ring is read while holders are being killed (see
/// `EventStream::next_batch`).
const KILLING_DRAIN: Duration = Duration::from_millis(1);
/// How long shutdown waits for holders to die before exiting anyway.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Where the guardian listens and logs, and its policy file.
pub struct Options {
    /// The Unix socket path.
    pub socket: PathBuf,
    /// The audit log path.
    pub audit: PathBuf,
    /// The policy file, when given on the command line.
    pub config: Option<PathBuf>,
    /// Whether to load the eBPF programs.
    pub ebpf: bool,
}

impl Options {
    /// Refuses a socket in the audit log's directory: that directory is
    /// made root's alone (0700), which would shut every other user out of
    /// the socket once the guardian says it is ready.
    fn check_layout(&self) -> anyhow::Result<()> {
        let (socket_dir, audit_dir) = (self.socket.parent(), self.audit.parent());
        if socket_dir.is_some() && socket_dir == audit_dir {
            anyhow::bail!(
                "the socket {} and the audit log {} share a directory, which the guardian makes \
                 root's alone (0700): no other user could reach the socket. Give them \
                 directories of their own (the defaults are {} and {})",
                self.socket.display(),
                self.audit.display(),
                crate::cli::DEFAULT_SOCKET,
                crate::cli::DEFAULT_AUDIT,
            );
        }
        Ok(())
    }
}

/// Runs the guardian until SIGTERM or SIGINT.
pub fn run(options: Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "the guardian must run as root (it loads eBPF programs and kills other users' processes)"
        );
    }
    options.check_layout()?;
    tracing::info!(pinning = %crate::os::peer::pinning(), "clients pinned to their process");
    let protections = hardening::harden_process().context("cannot harden the guardian")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(options, protections))
}

async fn serve(options: Options, mut protections: hardening::Protections) -> anyhow::Result<()> {
    let config = match &options.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(Path::new(DEFAULT_CONFIG), false)?,
    };
    // Before anything is loaded or opened: a guardian that is already
    // running, or a stranger on the path, stops this one here.
    socket_path::clear(&options.socket)?;
    let rotation = Rotation {
        max_bytes: config.audit_max_bytes,
        keep_files: config.audit_keep_files,
    };
    let audit = AuditLog::open(&options.audit, rotation)
        .with_context(|| format!("cannot open the audit log {}", options.audit.display()))?;
    let loaded = match options.ebpf {
        true => KernelLink::load(match config.watch_32_bit_syscalls {
            true => kernel::syscalls::Tables::All,
            false => kernel::syscalls::Tables::Native,
        }),
        false => Err(kernel::KernelError::Disabled),
    };
    let (mut link, mut events) = match loaded {
        Ok((link, events)) => (Ok(link), Some(events)),
        Err(err) => {
            tracing::warn!(%err, "eBPF unavailable: watching leaders by pidfd only, forks by /proc scan");
            (Err(err.to_string()), None)
        }
    };
    // Loading parsed the kernel's BTF (megabytes, freed now); hand those pages
    // back rather than keep them locked by mlockall for the guardian's life.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    hardening::lock_all_memory(&mut protections);
    if let Err(why) = fuse::mount_control() {
        tracing::warn!(%why, "holders trapped by FUSE cannot be freed");
    }
    let cgroups = Cgroups::create()
        .inspect_err(|err| tracing::warn!(%err, "no cgroup v2: holders are killed one by one"))
        .ok();
    let death_notice = link.as_ref().ok().map(KernelLink::death_notice);
    let supervisor = cgroups
        .as_ref()
        .and_then(|cgroups| start_supervisor(cgroups.instance(), death_notice));
    if let Ok(link) = &mut link {
        let protected = [
            (Some(Pid::current()), PROTECTED_GUARDIAN),
            (supervisor.as_ref().map(Pidfd::pid), PROTECTED_OTHER),
        ];
        for (pid, role) in protected {
            if let Some(pid) = pid {
                link.protect(pid, role)
                    .context("cannot protect the guardian from ptrace")?;
            }
        }
    }
    let listener = server::bind(&options.socket)?;
    tell_systemd_ready(&options.socket);
    let (to_core, mut inbox) = mpsc::unbounded_channel();
    let signals = forward_signals(to_core.clone())?;
    let failed = to_core.clone();
    let syncer = commit::start_syncer(move |batch, error| {
        let _ = failed.send(Msg::SyncFailed { batch, error });
    })
    .context("cannot start the audit syncer")?;
    // Everything that needs more than the allowlist is done by now.
    hardening::install_seccomp(&mut protections);
    let open_files = protections.open_files_limit;
    let budget = Budget::new(config.max_locked_bytes_per_uid);
    let setup = Setup {
        kernel: link,
        config,
        cgroups,
        supervisor,
        budget: budget.clone(),
        max_grants: max_grants(open_files),
        paths: Paths {
            socket: options.socket.clone(),
            audit_log: options.audit.clone(),
        },
    };
    let host = Host::new(audit, syncer, to_core.clone(), protections);
    let mut core = Core::new(host, setup);
    let limits = slots::Limits::for_descriptors(open_files);
    let (leaders, watched) = watch::channel(core.leaders());
    tokio::spawn(logind::watch(to_core.clone(), watched));
    tokio::spawn(server::accept(listener, limits, budget, to_core));
    tokio::spawn(signals);
    tracing::info!(socket = %options.socket.display(), "guardian ready");

    while step(&mut core, &mut events, &mut inbox).await? {
        // logind is asked which session each new leader is in.
        if let Some(now) = core.leaders_if_moved() {
            leaders.send_replace(now);
        }
    }
    // Shutting down: secrets are wiped; give holders a moment to be reaped so the
    // audit log records their deaths.
    let _ = fs::remove_file(&options.socket);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
    while core.is_settling() && tokio::time::Instant::now() < deadline {
        step(&mut core, &mut events, &mut inbox).await?;
    }
    tracing::info!("guardian stopped; every secret wiped");
    Ok(())
}

/// Under systemd (`Type=notify`, which sets NOTIFY_SOCKET), says the
/// guardian is ready: clients can connect from now on. Sent before seccomp,
/// which allows no new socket.
fn tell_systemd_ready(socket: &Path) {
    let status = format!("listening on {}", socket.display());
    let states = [NotifyState::Ready, NotifyState::Status(&status)];
    if let Err(err) = sd_notify::notify(&states) {
        tracing::warn!(%err, "cannot tell systemd the guardian is ready");
    }
}

/// Execs whose holders may live at once for a guardian allowed `open_files`
/// descriptors: each costs up to three (its cgroup's kill and events files,
/// a pidfd), so grants get at most three eighths of them.
fn max_grants(open_files: u64) -> usize {
    usize::try_from(open_files / 8)
        .unwrap_or(usize::MAX)
        .clamp(16, 1 << 16)
}

/// Starts the supervisor (handing it the kernel's notice of the guardian's
/// death, where eBPF is loaded); without one the guardian still runs, and
/// says so.
fn start_supervisor(instance: &Path, death_notice: Option<BorrowedFd<'_>>) -> Option<Pidfd> {
    // With SIGCHLD ignored the kernel reaps the supervisor if it dies, so no
    // zombie is left and no wait call is needed under seccomp; the pidfd
    // (opened while the child certainly lives) still reports its exit.
    // SAFETY: SIG_IGN installs no handler code.
    let ignored = unsafe { nix_signal::signal(Signal::SIGCHLD, SigHandler::SigIgn) };
    let started = ignored.map_err(std::io::Error::from).and_then(|_| {
        let child = supervisor::spawn(instance, death_notice)?;
        let pid = Pid::new(child.id() as i32).ok_or(std::io::ErrorKind::InvalidData)?;
        Pidfd::open(pid)
    });
    started
        .inspect_err(|err| tracing::warn!(%err, "no supervisor: holders outlive a killed guardian"))
        .ok()
}

/// Handles the next batch of kernel events (first, if any wait) or the next
/// message. Returns false once the core asks to stop.
async fn step(
    core: &mut Core<Host>,
    events: &mut Option<kernel::EventStream>,
    inbox: &mut mpsc::UnboundedReceiver<Msg>,
) -> anyhow::Result<bool> {
    let killing = core.is_settling();
    tokio::select! {
        biased;
        batch = next_batch(events, !killing) => {
            core.kernel_events(batch.context("kernel ring buffer failed")?);
            core.disarm_if_idle();
            Ok(true)
        }
        () = tokio::time::sleep(KILLING_DRAIN), if killing && events.is_some() => {
            let batch = events.as_mut().map(kernel::EventStream::switch_events_now);
            core.kernel_events(batch.unwrap_or_default());
            core.disarm_if_idle();
            Ok(true)
        }
        msg = inbox.recv() => {
            let mut running = msg.is_some_and(|msg| core.handle(msg));
            // Let the connection tasks read what their clients have sent, then
            // take whatever is waiting, so those records share one fdatasync.
            tokio::task::yield_now().await;
            for _ in 0..BATCH {
                match inbox.try_recv() {
                    Ok(msg) if running => running = core.handle(msg),
                    _ => break,
                }
                // A request can take a while (a leader's /proc scan): read
                // the switch's rings between them, so they never fill behind.
                let waiting = events.as_mut().map(kernel::EventStream::switch_events_now);
                if let Some(batch) = waiting.filter(|batch| !batch.is_empty()) {
                    core.kernel_events(batch);
                }
            }
            core.commit();
            core.disarm_if_idle();
            Ok(running)
        }
    }
}

/// The next batch of kernel events (holders' too if `holders`); never
/// completes without eBPF.
async fn next_batch(
    events: &mut Option<kernel::EventStream>,
    holders: bool,
) -> std::io::Result<Vec<guardian_ebpf::Event>> {
    match events {
        Some(events) => events.next_batch(holders).await,
        None => std::future::pending().await,
    }
}

fn forward_signals(
    to_core: mpsc::UnboundedSender<Msg>,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested: wiping every secret");
        let _ = to_core.send(Msg::Shutdown);
    })
}
