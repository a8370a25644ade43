//! Cost to the rest of the machine (a fork-exec-exit loop, an open/close loop
//! and a one-byte read/write loop, with and without the guardian's programs
//! loaded) and the guardian's size (RSS and locked memory idle, with 10,000
//! secrets, with 1,000 live sessions).

use std::{
    fs::File,
    io::{Read, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::guardian::Guardian;

/// `/bin/true` runs per second for `duration`.
pub fn fork_exec_rate(duration: Duration) -> f64 {
    per_second(duration, 1, || Command::new("/bin/true").status().is_ok())
}

/// Opens and closes of /etc/hostname per second for `duration`: every open
/// passes the read-path program at syscall exit.
pub fn open_close_rate(duration: Duration) -> f64 {
    per_second(duration, 1000, || File::open("/etc/hostname").is_ok())
}

/// Bytes copied per second, one byte per read(2) and one per write(2), from
/// /dev/zero to /dev/null for `duration` (as `dd bs=1` does): the cheapest
/// syscalls there are, so the programs' per-syscall cost shows most.
pub fn byte_copy_rate(duration: Duration) -> f64 {
    let (Ok(mut zero), Ok(mut null)) = (File::open("/dev/zero"), File::create("/dev/null")) else {
        return 0.0;
    };
    let mut byte = [0u8; 1];
    per_second(duration, 1000, || {
        zero.read(&mut byte).is_ok() && null.write(&byte).is_ok()
    })
}

/// Successful runs of `op` per second for `duration`, the clock read once
/// per `batch` runs so that it weighs nothing in a fast loop.
fn per_second(duration: Duration, batch: u32, mut op: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < duration {
        for _ in 0..batch {
            runs += u64::from(op());
        }
    }
    runs as f64 / start.elapsed().as_secs_f64()
}

/// Rates of a workload per round: with nothing loaded, with an idle guardian
/// (its watch programs attached) and with a guardian holding a secret (its
/// read-path programs attached too).
#[derive(Default)]
pub struct ForkRates {
    /// Nothing loaded.
    pub without: Vec<f64>,
    /// An idle guardian.
    pub idle: Vec<f64>,
    /// A guardian holding a secret.
    pub holding: Vec<f64>,
}

/// `rounds` rounds of `workload` in the three cases. The order rotates every
/// round, so a drift in the machine's speed over the run favours no case.
pub fn rates(
    binary: &Path,
    dir: &Path,
    rounds: usize,
    duration: Duration,
    workload: fn(Duration) -> f64,
) -> anyhow::Result<ForkRates> {
    let mut rates = ForkRates::default();
    for round in 0..rounds {
        for case in 0..3 {
            match (round + case) % 3 {
                0 => rates.without.push(workload(duration)),
                1 => {
                    let _guardian = Guardian::start(binary, dir, true)?;
                    rates.idle.push(workload(duration));
                }
                _ => {
                    let guardian = Guardian::start(binary, dir, true)?;
                    guardian
                        .connect()?
                        .put("machine", std::process::id() as i32, b"x")?;
                    rates.holding.push(workload(duration));
                }
            }
        }
    }
    Ok(rates)
}

/// Guardian memory: (VmRSS kB, VmLck kB).
pub fn memory(guardian: &Guardian) -> (u64, u64) {
    (
        e2e::proc_status_field(guardian.pid(), "VmRSS").unwrap_or(0),
        e2e::proc_status_field(guardian.pid(), "VmLck").unwrap_or(0),
    )
}

/// Sizes: idle, with `secrets` secrets bound to this process, and with
/// `sessions` leaders (sleeping processes) holding one secret each.
pub struct Sizes {
    /// (VmRSS kB, VmLck kB) idle.
    pub idle: (u64, u64),
    /// ... with the secrets.
    pub with_secrets: (u64, u64),
    /// ... with the sessions.
    pub with_sessions: (u64, u64),
}

/// Measures [`Sizes`].
pub fn sizes(binary: &Path, dir: &Path, secrets: usize, sessions: usize) -> anyhow::Result<Sizes> {
    let guardian = Guardian::start(binary, dir, true)?;
    let idle = memory(&guardian);
    let mut client = guardian.connect()?;
    let me = std::process::id() as i32;
    for n in 0..secrets {
        client.put(
            &format!("size-{n}"),
            me,
            b"0123456789abcdef0123456789abcdef",
        )?;
    }
    let with_secrets = memory(&guardian);
    client.request(&serde_json::json!({"op": "wipe_all"}), None)?;
    let mut leaders: Vec<Child> = Vec::with_capacity(sessions);
    for n in 0..sessions {
        let leader = Command::new("sleep")
            .arg("1000")
            .stdout(Stdio::null())
            .spawn()?;
        client.put(
            &format!("session-{n}"),
            leader.id() as i32,
            b"0123456789abcdef",
        )?;
        leaders.push(leader);
    }
    let with_sessions = memory(&guardian);
    for mut leader in leaders {
        let _ = leader.kill();
        let _ = leader.wait();
    }
    Ok(Sizes {
        idle,
        with_secrets,
        with_sessions,
    })
}
