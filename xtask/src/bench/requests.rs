//! Request cost: `get` round trips per second and their latency with 1, 16 and
//! 64 concurrent clients (each with its own connection, a durable audit record
//! per request), against OpenSSH's ssh-agent answering request-identities to
//! the same number of clients, in the same run.

use std::{
    fs,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{guardian::Guardian, sys};

/// Throughput and latencies of one row.
pub struct Load {
    /// Requests answered per second.
    pub per_second: f64,
    /// Latency of each request, ns.
    pub latencies: Vec<u64>,
}

/// Runs `clients` threads, each calling `request` on its own connection for
/// `duration`.
fn drive<C>(
    clients: usize,
    duration: Duration,
    connect: impl Fn() -> C + Sync,
    request: impl Fn(&mut C) -> bool + Sync,
) -> Load {
    let all = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                let mut connection = connect();
                let mut mine = Vec::new();
                while start.elapsed() < duration {
                    let begin = sys::now_ns();
                    if !request(&mut connection) {
                        break;
                    }
                    mine.push(sys::now_ns() - begin);
                }
                all.lock().map(|mut all| all.extend(mine)).ok();
            });
        }
    });
    let latencies = all.into_inner().unwrap_or_default();
    Load {
        per_second: latencies.len() as f64 / start.elapsed().as_secs_f64(),
        latencies,
    }
}

/// How the guardian's audit flushes were shared during a row (from its
/// `status`, before and after).
pub struct Flushes {
    /// fdatasyncs per second.
    pub per_second: f64,
    /// Answers each released, on average.
    pub answers_each: f64,
    /// CPU the guardian's main thread spent per `get`, µs.
    pub main_thread_us: f64,
}

/// `get` against the guardian: the secret is bound to this process, so its
/// threads are inside the session.
pub fn guardian_gets(
    guardian: &Guardian,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(Load, Flushes)> {
    guardian.connect()?.put(
        "bench-get",
        std::process::id() as i32,
        b"0123456789abcdef0123456789abcdef",
    )?;
    let get = serde_json::json!({"op": "get", "name": "bench-get"});
    let before = guardian.flushes()?;
    let cpu_before = guardian.main_thread_cpu_ns()?;
    let start = Instant::now();
    let load = drive(
        clients,
        duration,
        || guardian.connect().ok(),
        |client| {
            client
                .as_mut()
                .is_some_and(|client| client.request(&get, None).is_ok())
        },
    );
    let (after, seconds) = (guardian.flushes()?, start.elapsed().as_secs_f64());
    let cpu = guardian.main_thread_cpu_ns()? - cpu_before;
    let flushes = (after.0 - before.0) as f64;
    let shared = Flushes {
        per_second: flushes / seconds,
        answers_each: (after.1 - before.1) as f64 / flushes.max(1.0),
        main_thread_us: cpu as f64 / 1e3 / load.latencies.len().max(1) as f64,
    };
    guardian.connect()?.request(
        &serde_json::json!({"op": "revoke", "name": "bench-get"}),
        None,
    )?;
    Ok((load, shared))
}

/// An ssh-agent holding one ed25519 key, on its own socket.
pub struct SshAgent {
    child: Child,
    socket: std::path::PathBuf,
}

impl SshAgent {
    /// Starts `ssh-agent -D` and adds a fresh key.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let socket = dir.join("agent.sock");
        let key = dir.join("key");
        let _ = fs::remove_file(&socket);
        let _ = fs::remove_file(&key);
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start ssh-agent (package openssh-client)")?;
        let agent = Self { child, socket };
        if !e2e::wait_until(Duration::from_secs(5), || agent.socket.exists()) {
            bail!("ssh-agent did not come up");
        }
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()?;
        let add = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stderr(Stdio::null())
            .status()?;
        if !keygen.success() || !add.success() {
            bail!("cannot give ssh-agent a key");
        }
        Ok(agent)
    }

    /// request-identities from `clients` clients.
    pub fn identities(&self, clients: usize, duration: Duration) -> Load {
        drive(
            clients,
            duration,
            || UnixStream::connect(&self.socket).ok(),
            |stream| stream.as_mut().is_some_and(request_identities),
        )
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SSH2_AGENTC_REQUEST_IDENTITIES (11), answered by SSH2_AGENT_IDENTITIES_ANSWER (12).
fn request_identities(stream: &mut UnixStream) -> bool {
    if stream.write_all(&[0, 0, 0, 1, 11]).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return false;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).is_ok() && body.first() == Some(&12)
}

/// How a durable record reaches its file.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    /// Appended: each fdatasync also carries the file's new size.
    Appended,
    /// Written in place over zeros written a megabyte ahead, as the
    /// guardian's audit log does: each fdatasync carries data alone.
    InPlace,
}

/// The zeros written ahead at a time for [`Placement::InPlace`] (the
/// guardian's `audit::SEGMENT`).
const ROOM: usize = 1 << 20;

/// A file of 300-byte records in `dir`, written as `placement` says.
struct Records {
    file: fs::File,
    placement: Placement,
    written: u64,
    room: u64,
}

impl Records {
    const LINE: [u8; 300] = [b'x'; 300];

    fn create(dir: &Path, placement: Placement) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("durable-{placement:?}"));
        let _ = fs::remove_file(&path);
        let file = fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        // Gone from the directory at once; the descriptor keeps it.
        fs::remove_file(&path)?;
        Ok(Self {
            file,
            placement,
            written: 0,
            room: 0,
        })
    }

    fn write(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = Self::LINE.len() as u64;
        if let Placement::InPlace = self.placement
            && self.written + len > self.room
        {
            self.file.write_all_at(&vec![0; ROOM], self.room)?;
            self.room += ROOM as u64;
        }
        self.file.write_all_at(&Self::LINE, self.written)?;
        self.written += len;
        Ok(())
    }
}

/// The least a durable audit record costs here: `runs` 300-byte records
/// written to a file in `dir` as `placement` says, each followed by
/// fdatasync, as the guardian's log does with one client; each one's time
/// in ns.
pub fn durable_writes(dir: &Path, placement: Placement, runs: usize) -> anyhow::Result<Vec<u64>> {
    let mut records = Records::create(dir, placement)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        records.write()?;
        records.file.sync_data()?;
        times.push(start.elapsed().as_nanos() as u64);
    }
    Ok(times)
}

/// fdatasyncs a second one thread makes for `duration` while another writes
/// a 300-byte record every few tens of µs as `placement` says: the
/// guardian's pattern under many clients (its main thread writes records,
/// its syncer flushes them).
pub fn flushes_under_writes(
    dir: &Path,
    placement: Placement,
    duration: Duration,
) -> anyhow::Result<f64> {
    let mut records = Records::create(dir, placement)?;
    let file = records.file.try_clone()?;
    let end = Instant::now() + duration;
    let mut flushes = 0u64;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let writer = scope.spawn(move || -> std::io::Result<()> {
            while Instant::now() < end {
                records.write()?;
                std::thread::sleep(Duration::from_micros(20));
            }
            Ok(())
        });
        while Instant::now() < end {
            file.sync_data()?;
            flushes += 1;
        }
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        Ok(())
    })?;
    Ok(flushes as f64 / duration.as_secs_f64())
}
