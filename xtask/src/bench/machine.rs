//! Cost to the rest of the machine (a build of a small C project, a
//! fork-exec-exit loop, an open/close loop and a one-byte read/write loop,
//! with and without the guardian's programs loaded) and the guardian's size (RSS and locked memory idle, with 10,000
//! secrets, with 1,000 live sessions).

use std::{
    fs::{self, File},
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use super::guardian::Guardian;

/// A workload: run for a duration, give the rate.
pub type Rate = fn(Duration) -> f64;

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

/// Where [`prepare_build`] put the project [`build_rate`] builds.
static PROJECT: OnceLock<PathBuf> = OnceLock::new();

/// Writes a small C project into `dir`: sources that include a shared
/// header, compiled and linked into one program, so a build does real file
/// work (reads, writes, stats) and real process work (a compiler per file).
pub fn prepare_build(dir: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    fs::write(
        dir.join("shared.h"),
        "#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n\
         struct item { int key; char name[32]; };\n",
    )?;
    let mut objects = Vec::new();
    for unit in 0..BUILD_UNITS {
        let mut source = String::from("#include \"shared.h\"\n");
        for function in 0..24 {
            source.push_str(&format!(
                "int f{unit}_{function}(struct item *items, int n) {{\n\
                 \tint sum = 0;\n\
                 \tfor (int i = 0; i < n; i++) {{ sum += items[i].key * {function}; \
                 if (strlen(items[i].name) > {function}) sum ^= i; }}\n\
                 \treturn sum;\n}}\n"
            ));
        }
        fs::write(dir.join(format!("unit{unit}.c")), source)?;
        objects.push(format!("unit{unit}.o"));
    }
    fs::write(dir.join("main.c"), "int main(void) { return 0; }\n")?;
    fs::write(
        dir.join("Makefile"),
        format!(
            "CFLAGS = -O1\nOBJECTS = main.o {}\n\
             program: $(OBJECTS)\n\t$(CC) -o $@ $(OBJECTS)\n\
             %.o: %.c shared.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n",
            objects.join(" ")
        ),
    )?;
    let _ = PROJECT.set(dir.to_path_buf());
    anyhow::ensure!(
        build_once(dir),
        "cannot build the benchmark's C project with make and cc in {}",
        dir.display()
    );
    Ok(())
}

/// Sources in the benchmark's C project.
const BUILD_UNITS: usize = 16;

/// Whole builds (`make -B -j2`) of the project per second for `duration`.
pub fn build_rate(duration: Duration) -> f64 {
    let Some(dir) = PROJECT.get() else {
        return 0.0;
    };
    per_second(duration, 1, || build_once(dir))
}

fn build_once(dir: &Path) -> bool {
    Command::new("make")
        .args(["-s", "-B", "-j2", "-C"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
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

/// The cases each workload runs in, every round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// Nothing loaded.
    Without,
    /// An idle guardian: its watch programs attached.
    Idle,
    /// A guardian holding a secret, `watch_32_bit_syscalls = false`.
    Native,
    /// A guardian holding a secret, `watch_32_bit_syscalls = true`.
    All,
}

impl Case {
    /// Every case, in the order of the report.
    pub const ALL: [Self; 4] = [Self::Without, Self::Idle, Self::Native, Self::All];

    /// The row's label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Without => "nothing loaded",
            Self::Idle => "guardian, idle",
            Self::Native => "holding a secret, `watch_32_bit_syscalls = false`",
            Self::All => "holding a secret, `watch_32_bit_syscalls = true`",
        }
    }

    /// The guardian's policy in this case, if one runs.
    pub fn policy(self) -> Option<&'static str> {
        match self {
            Self::Without => None,
            Self::Idle => Some(""),
            Self::Native => Some("watch_32_bit_syscalls = false\n"),
            Self::All => Some("watch_32_bit_syscalls = true\n"),
        }
    }

    /// Starts this case's guardian, armed where it holds a secret.
    pub fn start(self, binary: &Path, dir: &Path) -> anyhow::Result<Option<Guardian>> {
        let Some(policy) = self.policy() else {
            return Ok(None);
        };
        let guardian = Guardian::start_with_policy(binary, dir, true, policy)?;
        if self != Self::Idle {
            guardian
                .connect()?
                .put("machine", std::process::id() as i32, b"x")?;
        }
        Ok(Some(guardian))
    }
}

/// Rates of `workload` per round, indexed by [`Case`]. The order of the
/// cases rotates every round, so a drift in the machine's speed over the
/// run favours none.
pub fn rates(
    binary: &Path,
    dir: &Path,
    rounds: usize,
    duration: Duration,
    workload: Rate,
) -> anyhow::Result<[Vec<f64>; 4]> {
    let mut rates: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        for step in 0..Case::ALL.len() {
            let case = Case::ALL[(round + step) % Case::ALL.len()];
            let _guardian = case.start(binary, dir)?;
            rates[case as usize].push(workload(duration));
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
