//! `ningen-shikkaku guard`: sets the guardian up (hardening, audit log, eBPF,
//! socket) and runs it: an accept loop with a connection limit, one task per
//! connection, and the core loop that owns the state.

use std::{
    fs,
    io::IoSlice,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use nix::sys::signal::{self as nix_signal, SigHandler, Signal};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{Semaphore, mpsc, oneshot},
};

use crate::{
    audit::AuditLog,
    cgroup::Cgroups,
    cli::DEFAULT_CONFIG,
    config::Config,
    core::{Core, Msg, Reply, Setup, SyncJob, Unsynced},
    hardening,
    kernel::{self, KernelLink},
    peer::Peer,
    process::{Pid, Pidfd},
    protocol::{self, FrameError, Request, Response},
    secret_mem::SecretBuf,
    supervisor,
};

/// Most connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// Most messages handled between two audit fdatasyncs.
const BATCH: usize = 256;
/// Time a client has to send one whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Runs the guardian until SIGTERM or SIGINT.
pub fn run(options: Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the guardian must run as root (it loads eBPF programs and kills other users' processes)"
        );
    }
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
    let audit = AuditLog::open(&options.audit, config.audit_max_bytes)
        .with_context(|| format!("cannot open the audit log {}", options.audit.display()))?;
    let loaded = match options.ebpf {
        true => KernelLink::load(),
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
    let cgroups = Cgroups::create()
        .inspect_err(|err| tracing::warn!(%err, "no cgroup v2: holders are killed one by one"))
        .ok();
    let supervisor = cgroups
        .as_ref()
        .and_then(|cgroups| start_supervisor(cgroups.instance()));
    if let Ok(link) = &mut link {
        let protected = [Some(Pid::current()), supervisor.as_ref().map(Pidfd::pid)];
        for pid in protected.into_iter().flatten() {
            link.protect(pid)
                .context("cannot protect the guardian from ptrace")?;
        }
    }
    let listener = bind(&options.socket)?;
    let (to_core, mut inbox) = mpsc::unbounded_channel();
    let signals = forward_signals(to_core.clone())?;
    let syncer = start_syncer(to_core.clone()).context("cannot start the audit syncer")?;
    // Everything that needs more than the allowlist is done by now.
    hardening::install_seccomp(&mut protections);
    let setup = Setup {
        kernel: link,
        protections,
        config,
        cgroups,
        supervisor,
        audit,
        syncer,
    };
    let mut core = Core::new(setup, to_core.clone());
    tokio::spawn(accept(listener, to_core));
    tokio::spawn(signals);
    tracing::info!(socket = %options.socket.display(), "guardian ready");

    while step(&mut core, &mut events, &mut inbox).await? {}
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

/// Starts the audit syncer: a thread that fdatasyncs the audit file for each
/// batch the core commits (coalescing batches that queue up meanwhile) and
/// only then sends their answers, so the core keeps serving while the disk
/// works. A failed sync hands the batch back to the core to refuse.
/// Started before seccomp, which would refuse the clone.
fn start_syncer(
    to_core: mpsc::UnboundedSender<Msg>,
) -> std::io::Result<std::sync::mpsc::Sender<SyncJob>> {
    let (jobs, queue) = std::sync::mpsc::channel::<SyncJob>();
    let (started, up) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("audit-sync".to_owned())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = started.send(());
            while let Ok(first) = queue.recv() {
                let mut batch: Vec<SyncJob> = vec![first];
                batch.extend(queue.try_iter());
                let mut synced: Vec<&Arc<std::fs::File>> = Vec::new();
                let mut failure = None;
                for job in &batch {
                    if !synced.iter().any(|file| Arc::ptr_eq(file, &job.file)) {
                        synced.push(&job.file);
                        if let Err(err) = job.file.sync_data() {
                            failure = Some(err);
                        }
                    }
                }
                for job in batch {
                    match &failure {
                        None => job.batch.into_iter().for_each(Unsynced::answer),
                        Some(err) => {
                            let error = std::io::Error::new(err.kind(), err.to_string());
                            let _ = to_core.send(Msg::SyncFailed {
                                batch: job.batch,
                                error,
                            });
                        }
                    }
                }
            }
        })?;
    // The thread's own start-up syscalls happen before seccomp is installed.
    up.recv()
        .map_err(|_| std::io::Error::other("the audit syncer did not start"))?;
    Ok(jobs)
}

/// Starts the supervisor; without one the guardian still runs, and says so.
fn start_supervisor(instance: &Path) -> Option<Pidfd> {
    // With SIGCHLD ignored the kernel reaps the supervisor if it dies, so no
    // zombie is left and no wait call is needed under seccomp; the pidfd
    // (opened while the child certainly lives) still reports its exit.
    // SAFETY: SIG_IGN installs no handler code.
    let ignored = unsafe { nix_signal::signal(Signal::SIGCHLD, SigHandler::SigIgn) };
    let started = ignored.map_err(std::io::Error::from).and_then(|_| {
        let child = supervisor::spawn(instance)?;
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
    core: &mut Core,
    events: &mut Option<kernel::EventStream>,
    inbox: &mut mpsc::UnboundedReceiver<Msg>,
) -> anyhow::Result<bool> {
    tokio::select! {
        biased;
        ready = readable(events) => {
            let mut guard = ready.context("kernel ring buffer failed")?;
            let batch = kernel::drain(guard.get_inner_mut());
            guard.clear_ready();
            core.kernel_events(batch);
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
            }
            core.commit();
            core.disarm_if_idle();
            Ok(running)
        }
    }
}

/// Waits until the ring buffer has events; never completes without eBPF.
async fn readable(
    events: &mut Option<kernel::EventStream>,
) -> std::io::Result<
    tokio::io::unix::AsyncFdReadyMutGuard<'_, aya::maps::RingBuf<aya::maps::MapData>>,
> {
    match events {
        Some(events) => events.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// Binds the socket, refusing to take over from a live guardian.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("a guardian is already listening on {}", path.display());
        }
        fs::remove_file(path).with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    // Any local user may connect; SO_PEERCRED decides what each may do.
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

async fn accept(listener: UnixListener, to_core: mpsc::UnboundedSender<Msg>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let to_core = to_core.clone();
                tokio::spawn(async move {
                    connection(stream, to_core).await;
                    drop(permit);
                });
            }
            Err(err) => tracing::warn!(%err, "accept failed"),
        }
    }
}

/// Serves one client: requests one after another until it closes the stream
/// or sends something malformed.
async fn connection(mut stream: UnixStream, to_core: mpsc::UnboundedSender<Msg>) {
    let peer = stream.peer_cred().ok().as_ref().and_then(Peer::from_cred);
    let Some(peer) = peer else {
        let _ = to_core.send(Msg::Malformed {
            peer: None,
            reason: "peer has no visible pid".into(),
        });
        return;
    };
    loop {
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return,
            Ok(Err(err)) => return refuse(&mut stream, &to_core, peer, err.to_string()).await,
            Err(_) => return refuse(&mut stream, &to_core, peer, "request timed out".into()).await,
        };
        let (request, payload) = request;
        let (reply_to, reply) = oneshot::channel();
        let msg = Msg::Request {
            peer: peer.clone(),
            request,
            payload,
            reply: reply_to,
        };
        if to_core.send(msg).is_err() {
            return;
        }
        let Ok(reply) = reply.await else { return };
        if write_reply(&mut stream, reply).await.is_err() {
            return;
        }
    }
}

/// Errors reading a request.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Memory(#[from] crate::secret_mem::MemoryError),
}

/// Reads one request; `None` at a clean end of stream.
async fn read_request(
    stream: &mut UnixStream,
) -> Result<Option<(Request, Option<SecretBuf>)>, ReadError> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err.into()),
    }
    let mut header = vec![0u8; protocol::header_len(prefix)?];
    stream.read_exact(&mut header).await?;
    let request: Request = protocol::decode(&header)?;
    let payload = match &request {
        Request::Put { len, .. } => {
            let mut bytes = SecretBuf::new(protocol::check_secret_len(*len)?)?;
            // Straight from the socket into locked pages.
            stream.read_exact(bytes.as_mut_slice()).await?;
            Some(bytes)
        }
        _ => None,
    };
    Ok(Some((request, payload)))
}

/// Writes the reply frame and the secret bytes after it in one writev, so the
/// client wakes once for the whole answer.
async fn write_reply(stream: &mut UnixStream, reply: Reply) -> std::io::Result<()> {
    let frame = protocol::encode(&reply.response);
    let mut parts: Vec<IoSlice<'_>> = std::iter::once(frame.as_slice())
        .chain(reply.secrets.iter().map(SecretBuf::as_slice))
        .map(IoSlice::new)
        .collect();
    let mut rest = parts.as_mut_slice();
    while !rest.is_empty() {
        let written = stream.write_vectored(rest).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
    // `reply.secrets` drops here and wipes the copies.
}

/// Audits a malformed request, tells the client why, and closes.
async fn refuse(
    stream: &mut UnixStream,
    to_core: &mpsc::UnboundedSender<Msg>,
    peer: Peer,
    reason: String,
) {
    let response = Response::Error {
        message: reason.clone(),
    };
    let _ = stream.write_all(&protocol::encode(&response)).await;
    let _ = to_core.send(Msg::Malformed {
        peer: Some(peer),
        reason,
    });
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
