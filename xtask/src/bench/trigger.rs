//! Trigger latency: a leader with a holder tree of N processes is SIGKILLed;
//! how long until the secret is wiped, and until the last holder is dead?
//!
//! Every implementation is timed from the same instant, the moment this
//! harness sends SIGKILL (CLOCK_MONOTONIC), and "last holder dead" is when the
//! harness's pidfds of the whole tree report the exit, so the three rows are
//! measured alike. Every leader is a `sleep` (the guardian's leader shell
//! execs into one once its holder is started), so leaders die alike too.
//! For the eBPF guardian the audit log also gives its own
//! view, from the kernel's exit event: those are the figures the targets name.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};

use super::{guardian::Guardian, sys};

/// A holder tree: the holder writes its pid and starts N-1 sleeping children.
const TREE: &str = r#"n=$1; pids=$2; i=1
while [ $i -lt $n ]; do sleep 1000 & echo $! >> "$pids"; i=$((i+1)); done
echo $$ >> "$pids"; exec sleep 1000
"#;

/// Which switch is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The guardian with its eBPF programs.
    Ebpf,
    /// The same guardian, `--no-ebpf`: pidfd watch, cgroup kill.
    Pidfd,
    /// reference/python/ningen_ref.py.
    Python,
    /// No switch at all: the harness writes `cgroup.kill` of a cgroup holding
    /// the tree. The floor for "last holder dead" on this machine.
    Kernel,
    /// No switch either, but starting where a switch must: the harness
    /// SIGKILLs a leader, waits on its pidfd for the exit, then writes
    /// `cgroup.kill`. The floor a switch's kill is held to.
    KernelAfterLeader,
}

impl Subject {
    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Subject::Ebpf => "eBPF guardian",
            Subject::Pidfd => "guardian, pidfd fallback",
            Subject::Python => "Python reference",
            Subject::Kernel => "kernel alone: cgroup.kill",
            Subject::KernelAfterLeader => "kernel alone: leader's exit, then cgroup.kill",
        }
    }

    /// True for the rows with no switch, which wipe nothing.
    pub fn kernel_alone(self) -> bool {
        matches!(self, Subject::Kernel | Subject::KernelAfterLeader)
    }
}

/// One trigger's measurements, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// SIGKILL sent to the secret wiped.
    pub kill_to_wiped: u64,
    /// SIGKILL sent to every holder seen dead.
    pub kill_to_dead: u64,
    /// The guardian's own figures from the kernel's exit event (eBPF only):
    /// event to wiped, event to last holder's exit.
    pub event_to_wiped: Option<u64>,
    /// See `event_to_wiped`.
    pub event_to_dead: Option<u64>,
    /// CPU the guardian's main thread used from the kill until every holder
    /// was seen dead (eBPF only): CPU the dying holders could not have.
    pub guardian_cpu: Option<u64>,
}

/// Everything a run needs.
pub struct Bench<'a> {
    /// The ningen-shikkaku binary.
    pub binary: &'a Path,
    /// The repository root (for the Python reference).
    pub root: &'a Path,
    /// A scratch directory.
    pub dir: PathBuf,
}

impl Bench<'_> {
    /// `runs` triggers of `subject` with trees of `tree` processes.
    pub fn run(&self, subject: Subject, tree: usize, runs: usize) -> anyhow::Result<Vec<Sample>> {
        let dir = self.dir.join(format!("{subject:?}-{tree}"));
        let mut guardian = match subject {
            Subject::Python | Subject::Kernel | Subject::KernelAfterLeader => None,
            Subject::Ebpf | Subject::Pidfd => Some(Guardian::start(
                self.binary,
                &dir.join("guardian"),
                subject == Subject::Ebpf,
            )?),
        };
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("tree.sh"), TREE)?;
        let mut samples = Vec::with_capacity(runs);
        for run in 0..runs {
            let sample = match (&mut guardian, subject) {
                (Some(guardian), _) => self.guardian_trigger(guardian, &dir, tree, run)?,
                (None, Subject::Kernel) => kernel_trigger(&dir, tree, run, false)?,
                (None, Subject::KernelAfterLeader) => kernel_trigger(&dir, tree, run, true)?,
                (None, _) => self.python_trigger(&dir, tree, run)?,
            };
            samples.push(sample);
        }
        if subject.kernel_alone() {
            fs::remove_dir(bench_cgroup()?)?;
        }
        Ok(samples)
    }

    /// `runs` deaths of a guardian (SIGKILL, a fresh guardian each time)
    /// whose one session holds a tree of `tree` holders: from the kill to
    /// the last holder dead, in nanoseconds.
    pub fn guardian_deaths(&self, tree: usize, runs: usize) -> anyhow::Result<Vec<u64>> {
        let dir = self.dir.join(format!("death-{tree}"));
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("tree.sh"), TREE)?;
        let mut samples = Vec::with_capacity(runs);
        for run in 0..runs {
            let guardian = Guardian::start(self.binary, &dir.join("guardian"), true)?;
            let (mut leader, pids) = self.start_tree(&guardian, &dir, tree, run)?;
            let guardian_pid = guardian.pid();
            let (kill_ns, dead_ns) = kill_when_ready(&[leader.id() as i32], &pids, tree, || {
                sys::kill(guardian_pid)
            })?;
            samples.push(dead_ns - kill_ns);
            leader.kill()?;
            leader.wait()?;
        }
        Ok(samples)
    }

    /// A session leader that stores `s{run}` and runs a tree of `tree`
    /// holders of it, writing their pids to the returned file.
    fn start_tree(
        &self,
        guardian: &Guardian,
        dir: &Path,
        tree: usize,
        run: usize,
    ) -> anyhow::Result<(std::process::Child, PathBuf)> {
        let pids = dir.join(format!("pids-{run}"));
        let script = format!(
            "printf x | \"$NS\" put s{run} 2>/dev/null || exit 1
             \"$NS\" exec --env T=s{run} -- sh tree.sh {tree} {} &
             exec sleep 1000",
            pids.display()
        );
        let leader = Command::new("setsid")
            .args(["bash", "-c", &script])
            .current_dir(dir)
            .env("NS", self.binary)
            .env("NINGEN_SHIKKAKU_SOCKET", &guardian.socket)
            .stdout(Stdio::null())
            .spawn()?;
        Ok((leader, pids))
    }

    fn guardian_trigger(
        &self,
        guardian: &mut Guardian,
        dir: &Path,
        tree: usize,
        run: usize,
    ) -> anyhow::Result<Sample> {
        let name = format!("s{run}");
        let (mut leader, pids) = self.start_tree(guardian, dir, tree, run)?;
        let leader_pid = leader.id() as i32;
        let cpu_at_kill = std::cell::Cell::new(0);
        let (kill_ns, dead_ns) = kill_when_ready(&[leader_pid], &pids, tree, || {
            cpu_at_kill.set(guardian.main_thread_cpu_ns().unwrap_or(0));
            sys::kill(leader_pid)
        })?;
        let guardian_cpu = guardian.main_thread_cpu_ns()? - cpu_at_kill.get();
        leader.wait()?;
        let latency = guardian.trigger_latency(&name)?;
        let number = |key: &str| latency[key].as_u64();
        let start = number("start_ns").context("no start_ns")?;
        let wiped = number("wiped_ns").context("no wiped_ns")?;
        Ok(Sample {
            kill_to_wiped: (start + wiped).saturating_sub(kill_ns),
            kill_to_dead: dead_ns - kill_ns,
            event_to_wiped: Some(wiped),
            event_to_dead: number("holders_dead_ns"),
            guardian_cpu: Some(guardian_cpu),
        })
    }

    fn python_trigger(&self, dir: &Path, tree: usize, run: usize) -> anyhow::Result<Sample> {
        let pids = dir.join(format!("pids-{run}"));
        let report = dir.join(format!("report-{run}"));
        let secret = dir.join("secret");
        fs::write(&secret, "x")?;
        let mut leader = Command::new("setsid").args(["sleep", "1000"]).spawn()?;
        let mut reference = Command::new("/usr/bin/python3")
            .arg(self.root.join("reference/python/ningen_ref.py"))
            .args([
                "--leader",
                &leader.id().to_string(),
                "--env",
                "T",
                "--secret-file",
            ])
            .arg(&secret)
            .arg("--report")
            .arg(&report)
            .args(["--", "sh", "tree.sh", &tree.to_string()])
            .arg(&pids)
            .current_dir(dir)
            .spawn()?;
        let leader_pid = leader.id() as i32;
        let (kill_ns, dead_ns) =
            kill_when_ready(&[leader_pid], &pids, tree, || sys::kill(leader_pid))?;
        leader.wait()?;
        reference.wait()?;
        let text = fs::read_to_string(&report)?;
        let wiped: u64 = text
            .split_whitespace()
            .nth(1)
            .context("bad report")?
            .parse()?;
        Ok(Sample {
            kill_to_wiped: wiped.saturating_sub(kill_ns),
            kill_to_dead: dead_ns - kill_ns,
            ..Sample::default()
        })
    }
}

/// The tree in a cgroup of its own, killed by the harness writing
/// cgroup.kill: at once, or (`after_leader`) once a leader it SIGKILLs is
/// seen to exit.
fn kernel_trigger(
    dir: &Path,
    tree: usize,
    run: usize,
    after_leader: bool,
) -> anyhow::Result<Sample> {
    let cgroup = bench_cgroup()?.join(format!("run-{run}"));
    fs::create_dir_all(&cgroup)?;
    let pids = dir.join(format!("pids-{run}"));
    let mut shell = Command::new("sh")
        .args([
            "-c",
            r#"echo $$ > "$1/cgroup.procs" && exec sh tree.sh "$2" "$3""#,
            "sh",
        ])
        .arg(&cgroup)
        .arg(tree.to_string())
        .arg(&pids)
        .current_dir(dir)
        .spawn()?;
    let mut leader = match after_leader {
        true => Some(Command::new("setsid").args(["sleep", "1000"]).spawn()?),
        false => None,
    };
    let leader_pid = leader.as_ref().map(|leader| leader.id() as i32);
    let leader_fd = leader_pid.map(sys::pidfd).transpose()?;
    let kill = || {
        if let (Some(pid), Some(fd)) = (leader_pid, &leader_fd) {
            sys::kill(pid);
            sys::wait_all_exited(std::slice::from_ref(fd), Duration::from_secs(10));
        }
        let _ = fs::write(cgroup.join("cgroup.kill"), "1");
    };
    let settle: Vec<i32> = leader_pid.into_iter().collect();
    let (kill_ns, dead_ns) = kill_when_ready(&settle, &pids, tree, kill)?;
    shell.wait()?;
    if let Some(leader) = &mut leader {
        leader.wait()?;
    }
    fs::remove_dir(&cgroup)?;
    Ok(Sample {
        kill_to_dead: dead_ns - kill_ns,
        ..Sample::default()
    })
}

/// `<cgroup2 mount>/ningen-shikkaku-bench`, for the kernel-alone rows.
fn bench_cgroup() -> anyhow::Result<PathBuf> {
    let mount = e2e::cgroup2_mount().context("no cgroup2 mount for the kernel-alone rows")?;
    Ok(mount.join("ningen-shikkaku-bench"))
}

/// Waits until the tree has written all its pids and every process in it and
/// in `settle` is asleep, opens pidfds for the tree, calls `kill` and waits for
/// the tree to die. Returns (kill, dead) times.
fn kill_when_ready(
    settle: &[i32],
    pids: &Path,
    tree: usize,
    kill: impl Fn(),
) -> anyhow::Result<(u64, u64)> {
    let ready = || {
        fs::read_to_string(pids)
            .map(|text| text.lines().count() == tree)
            .unwrap_or(false)
    };
    if !e2e::wait_until(Duration::from_secs(30), ready) {
        kill();
        bail!("holder tree of {tree} did not start");
    }
    let tree_pids = fs::read_to_string(pids)?
        .lines()
        .map(|line| Ok(line.trim().parse::<i32>()?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A pid is written as soon as its fork returns; the exec into `sleep` may
    // still be running. Killing then would time the CPU work of up to a
    // hundred unfinished execs (on two cores) rather than the switch.
    let settled = || {
        settle
            .iter()
            .chain(&tree_pids)
            .all(|&pid| asleep_in_sleep(pid))
    };
    if !e2e::wait_until(Duration::from_secs(30), settled) {
        kill();
        bail!("holder tree of {tree} did not settle into sleep");
    }
    let fds = tree_pids
        .iter()
        .map(|&pid| sys::pidfd(pid).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kill_ns = sys::now_ns();
    kill();
    let dead_ns = sys::wait_all_exited(&fds, Duration::from_secs(10))
        .context("holders outlived the trigger")?;
    Ok((kill_ns, dead_ns))
}

/// True once `pid` is `sleep`, blocked (state S in /proc/PID/stat).
fn asleep_in_sleep(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat.contains("(sleep) S "))
}
