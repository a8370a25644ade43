//! A guardian started for a benchmark, and a minimal client of its protocol
//! (the same frames the CLI sends), so request costs are measured without
//! process start-up in the way.

use std::{
    fs,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::Value;

/// A running guardian.
pub struct Guardian {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its audit log.
    pub audit: PathBuf,
    audit_offset: u64,
}

impl Guardian {
    /// Starts `binary guard` in `dir`, with eBPF or on the pidfd fallback.
    pub fn start(binary: &Path, dir: &Path, ebpf: bool) -> anyhow::Result<Self> {
        Self::start_with_policy(binary, dir, ebpf, "")
    }

    /// [`Self::start`], with `policy` added to the benchmark's config file.
    pub fn start_with_policy(
        binary: &Path,
        dir: &Path,
        ebpf: bool,
        policy: &str,
    ) -> anyhow::Result<Self> {
        let _ = fs::remove_dir_all(dir);
        // The socket and the audit log each in a directory of their own,
        // as the guardian requires.
        fs::create_dir_all(dir.join("run"))?;
        fs::create_dir_all(dir.join("log"))?;
        let socket = dir.join("run/guardian.sock");
        let audit = dir.join("log/audit.jsonl");
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!("max_secrets_per_uid = 20000\naudit_max_bytes = 1073741824\n{policy}"),
        )?;
        let mut command = Command::new(binary);
        command
            .arg("guard")
            .arg("--socket")
            .arg(&socket)
            .arg("--audit")
            .arg(&audit);
        command.arg("--config").arg(&config).stderr(Stdio::null());
        if !ebpf {
            command.arg("--no-ebpf");
        }
        let child = command.spawn().context("cannot start the guardian")?;
        let guardian = Self {
            child,
            socket,
            audit,
            audit_offset: 0,
        };
        // Stretched in a VM under emulation, where a start takes seconds.
        if !e2e::wait_until(e2e::stretched(Duration::from_secs(10)), || {
            UnixStream::connect(&guardian.socket).is_ok()
        }) {
            bail!("the guardian did not come up");
        }
        let status = guardian
            .connect()?
            .request(&serde_json::json!({"op": "status"}), None)?;
        let mode = status["watch_mode"].as_str().unwrap_or("");
        if ebpf != (mode == "ebpf-tracepoints") {
            bail!("guardian watch mode is {mode}, wanted eBPF {ebpf}");
        }
        Ok(guardian)
    }

    /// The guardian's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A connection.
    pub fn connect(&self) -> io::Result<Client> {
        Ok(Client {
            stream: UnixStream::connect(&self.socket)?,
        })
    }

    /// CPU time its main thread (which serves every request and handles
    /// every kernel event) has used, ns: the first field of its schedstat.
    pub fn main_thread_cpu_ns(&self) -> anyhow::Result<u64> {
        let pid = self.pid();
        let stat = fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat"))?;
        stat.split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .context("unexpected schedstat")
    }

    /// Its audit log's (fdatasyncs, answers they released) so far.
    pub fn flushes(&self) -> anyhow::Result<(u64, u64)> {
        let status = self
            .connect()?
            .request(&serde_json::json!({"op": "status"}), None)?;
        let flushes = &status["audit_flushes"];
        match (flushes["flushes"].as_u64(), flushes["answers"].as_u64()) {
            (Some(flushes), Some(answers)) => Ok((flushes, answers)),
            _ => bail!("the guardian's status has no audit_flushes: {status}"),
        }
    }

    /// Waits for the trigger record of secret `name`; returns its `latency`.
    pub fn trigger_latency(&mut self, name: &str) -> anyhow::Result<Value> {
        let wanted = format!("\"names\":[\"{name}\"]");
        let mut found = None;
        let ok = e2e::wait_until(Duration::from_secs(10), || {
            let Ok(mut file) = fs::File::open(&self.audit) else {
                return false;
            };
            if file.seek(SeekFrom::Start(self.audit_offset)).is_err() {
                return false;
            }
            let mut reader = BufReader::new(file);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
                self.audit_offset += line.len() as u64;
                if line.contains("\"action\":\"trigger\"") && line.contains(&wanted) {
                    found = serde_json::from_str::<Value>(&line).ok();
                }
                line.clear();
            }
            found.is_some()
        });
        if !ok {
            bail!("no trigger record for {name}");
        }
        Ok(found
            .map(|record| record["latency"].clone())
            .unwrap_or_default())
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // SAFETY: kill with the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One connection, many requests.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Sends a request (and a secret for `put`); returns the JSON header, after
    /// reading and discarding any secret bytes that follow it.
    pub fn request(&mut self, header: &Value, secret: Option<&[u8]>) -> io::Result<Value> {
        let body = serde_json::to_vec(header)?;
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        if let Some(secret) = secret {
            frame.extend_from_slice(secret);
        }
        self.stream.write_all(&frame)?;
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let mut reply = vec![0u8; u32::from_le_bytes(prefix) as usize];
        self.stream.read_exact(&mut reply)?;
        let reply: Value = serde_json::from_slice(&reply)?;
        if let Some(lens) = reply["lens"].as_array() {
            let total: u64 = lens.iter().filter_map(Value::as_u64).sum();
            io::copy(&mut (&mut self.stream).take(total), &mut io::sink())?;
        }
        if reply["reply"] == "error" {
            return Err(io::Error::other(reply["message"].to_string()));
        }
        Ok(reply)
    }

    /// Stores `secret` as `name`, bound to `leader`.
    pub fn put(&mut self, name: &str, leader: i32, secret: &[u8]) -> io::Result<Value> {
        let header = serde_json::json!({
            "op": "put", "name": name, "bind": leader, "ttl_secs": null, "len": secret.len()
        });
        self.request(&header, Some(secret))
    }
}
