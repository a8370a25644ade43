//! The virtual machine itself: the script it runs, the probe for KVM, and
//! the boot, watched from the host through the results directory.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::Test;

/// The longest one test may take in the guest before it is stopped. Under
/// TCG emulation the slowest selected test takes about a minute (the
/// slowest end-to-end test, containment's tree of 200, two).
pub const TEST_LIMIT: Duration = Duration::from_secs(180);
/// The longest the kernel may take to boot and the guest to set up (about
/// 40-80 s under TCG).
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// A kernel under working KVM reaches its root mount within a second or two.
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(20);

/// How many times longer the tests wait for what must happen, and how far
/// bounds measured on real hardware stretch, when the machine is emulated
/// (see `slowdown` in tests/src/lib.rs): under TCG a guardian took 4 to
/// 17 s to start, where the tests allow 10, and a hundred holders took
/// 563 ms to die where this machine takes 6 to 9 (the tests allow 50).
pub const TCG_SLOWDOWN: &str = "20";

/// The script's name in the results directory.
const SCRIPT: &str = "guest.sh";
/// Written by the script once the guest is set up, then at its end.
pub const BOOTED: &str = "booted";
pub const DONE: &str = "done";

/// A machine ready to boot.
pub struct Machine {
    /// virtme-ng's `vng`.
    pub vng: PathBuf,
    pub vmlinuz: PathBuf,
    /// Whether to use KVM (else TCG).
    pub kvm: bool,
    /// Extra kernel arguments.
    pub cmdline: Option<String>,
    /// The results directory, the only one the guest may write.
    pub out: PathBuf,
}

/// Writes the script the guest runs: it mounts what the guardian needs and
/// virtme-ng left out, notes the kernel, its LSMs and a guardian's `status`,
/// then runs `body` with `env` set, in `cwd`, and notes its end.
pub fn write_script(
    out: &Path,
    cwd: &Path,
    env: &[(&str, &std::ffi::OsStr)],
    body: &str,
) -> anyhow::Result<()> {
    let mut script = format!(
        "#!/bin/sh\n\
         # Written by cargo xtask; runs inside the virtual machine.\n\
         out={out}\n\
         {SETUP}\
         cd {cwd} || exit 1\n",
        out = quote(out),
        cwd = quote(cwd),
    );
    for (name, value) in env {
        script += &format!("export {name}={}\n", quote(value));
    }
    script += &format!("{STATUS}touch \"$out/{BOOTED}\"\n{body}touch \"$out/{DONE}\"\n");
    fs::write(out.join(SCRIPT), script).context("cannot write the guest's script")
}

/// The script's body that runs each test alone (where cargo runs tests:
/// the package's directory), each writing `test-N.log` and `test-N.status`
/// (exit code, milliseconds).
pub fn tests_body(tests: &[Test]) -> String {
    let mut body = format!("limit={}\n{RUN_TEST}", TEST_LIMIT.as_secs());
    for (index, test) in tests.iter().enumerate() {
        body += &format!("t {index} {} {}\n", quote(&test.binary), quote(&test.name));
    }
    body
}

/// The script's body that runs `command` once, its output in `FILE.out`
/// and `FILE.log` of the results directory.
pub fn command_body(command: &[&std::ffi::OsStr], file: &str) -> String {
    let words: Vec<String> = command.iter().map(quote).collect();
    format!(
        "{} > \"$out/{file}.out\" 2> \"$out/{file}.log\"\necho $? > \"$out/{file}.status\"\n",
        words.join(" ")
    )
}

/// The guest's setup. virtme-ng mounts tracefs, securityfs and cgroup2 but
/// not bpffs (on the kernels tried); whatever it left out is mounted here
/// and named in `mounted`. The guest's /tmp is an overlay on the host's:
/// a tmpfs of its own keeps the host's files out of the tests' sight.
const SETUP: &str = r#"for fs in tracefs:/sys/kernel/tracing securityfs:/sys/kernel/security bpf:/sys/fs/bpf cgroup2:/sys/fs/cgroup; do
	mountpoint -q "${fs#*:}" || { mount -t "${fs%%:*}" none "${fs#*:}" && echo "${fs%%:*} on ${fs#*:}" >> "$out/mounted"; }
done
mount -t tmpfs -o mode=1777 tmpfs /tmp
cut -d' ' -f1 /proc/uptime > "$out/uptime"
uname -r > "$out/kernel"
cat /sys/kernel/security/lsm > "$out/lsm"
"#;

/// A guardian started alone, for its `status` report (which protections
/// this kernel gives it) and its log; given a minute to come up, as a
/// failed `status` itself takes a while under emulation. The socket and
/// the audit log each get a directory of their own, as the guardian asks.
const STATUS: &str = r#"d=/tmp/xtask-status
mkdir -p "$d/run" "$d/log" && : > "$d/config.toml"
"$NINGEN_SHIKKAKU_BIN" guard --socket "$d/run/guardian.sock" --audit "$d/log/audit.jsonl" --config "$d/config.toml" 2> "$out/guardian.log" &
g=$!
since=$(date +%s)
until "$NINGEN_SHIKKAKU_BIN" status --socket "$d/run/guardian.sock" > "$out/status" 2>&1; do
	[ $(( $(date +%s) - since )) -lt 60 ] && kill -0 $g 2> /dev/null || break
	sleep 0.2
done
kill $g 2> /dev/null; wait $g
"#;

/// `t N BINARY NAME` runs one test alone. A test stopped at the time limit
/// (`timeout` exits 124) leaves its guardians running and their scratch
/// directories behind, as no drop ran: their logs are kept as
/// `test-N.DIR.guardian.log`, and they get the SIGTERM the test would have
/// sent, so the next test starts on a quiet machine.
const RUN_TEST: &str = r#"t() {
	start=$(date +%s%N)
	timeout -k 10 "$limit" "$2" --exact "$3" --include-ignored --test-threads=1 > "$out/test-$1.log" 2>&1
	rc=$?
	echo "$rc $(( ($(date +%s%N) - start) / 1000000 ))" > "$out/test-$1.tmp"
	if [ $rc = 124 ]; then
		for log in /tmp/ns-e2e-*/guardian.log; do
			[ -e "$log" ] && cp "$log" "$out/test-$1.$(basename "${log%/guardian.log}").guardian.log"
		done
		for pid in $(pgrep -x ningen-shikkaku); do kill "$pid"; done
		sleep 5
		rm -rf /tmp/ns-e2e-*
	fi
	mv "$out/test-$1.tmp" "$out/test-$1.status"
}
"#;

/// `path` as one word for sh.
fn quote(path: impl AsRef<std::ffi::OsStr>) -> String {
    let text = path.as_ref().to_string_lossy();
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// True when `/dev/kvm` really runs a guest: nested KVM often fails (here
/// with "KVM internal error", the guest then hanging), so a kernel is
/// booted without a root filesystem and must reach its panic for lack of
/// one. Its console goes to `out/kvm-probe.log`.
pub fn kvm_works(vmlinuz: &Path, out: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let log = out.join("kvm-probe.log");
    let Ok(console) = fs::File::create(&log) else {
        return false;
    };
    let probe = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-cpu", "host", "-m", "256M", "-nodefaults"])
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut probe) = probe else {
        return false;
    };
    wait_or_kill(&mut probe, KVM_PROBE_LIMIT);
    fs::read(&log).is_ok_and(|console| console.windows(12).any(|w| w == b"Kernel panic"))
}

/// Waits up to `limit` for `child`, killing it past that.
fn wait_or_kill(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Machine {
    /// Boots the machine, runs its script, calling `tick` every second
    /// (to show progress) and stopping it past `limit`; returns how long
    /// boot and run took. Fails if the guest did not run to the end of its
    /// script.
    pub fn run(&self, limit: Duration, mut tick: impl FnMut(Instant)) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut vng = self.spawn()?;
        let deadline = started + BOOT_LIMIT + limit;
        loop {
            tick(started);
            if vng.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                kill_group(&vng);
                let _ = vng.wait();
                bail!(
                    "the VM ran past {} s: stopped it",
                    (deadline - started).as_secs()
                );
            }
            thread::sleep(Duration::from_secs(1));
        }
        tick(started);
        if !self.out.join(DONE).exists() {
            bail!(
                "the VM stopped before the end of its script; its output: {}",
                self.out.join("vng.log").display()
            );
        }
        Ok(started.elapsed())
    }

    /// Starts vng in a process group of its own (it starts QEMU), its
    /// output in `vng.log`.
    fn spawn(&self) -> anyhow::Result<Child> {
        let log = fs::File::create(self.out.join("vng.log")).context("cannot make vng.log")?;
        let mut command = Command::new(&self.vng);
        command.arg("-r").arg(&self.vmlinuz);
        if !self.kvm {
            command.arg("--disable-kvm");
        }
        if let Some(cmdline) = &self.cmdline {
            command.arg("--append").arg(cmdline);
        }
        // vng runs its helpers (virtme-run) from PATH: its venv's bin first.
        let venv_bin = self.vng.parent().unwrap_or(Path::new("."));
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .args(["--memory", "2G", "--cpus", "2", "--rwdir"])
            .arg(&self.out)
            .arg("--")
            .arg(format!("sh {}", quote(self.out.join(SCRIPT))))
            .env("PATH", format!("{}:{path}", venv_bin.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot run vng")
    }
}

/// Kills `child`'s process group (vng and the QEMU it started).
fn kill_group(child: &Child) {
    // SAFETY: kill has no memory preconditions; the group is the one
    // spawn made for this child, so nothing else is in it.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
}
