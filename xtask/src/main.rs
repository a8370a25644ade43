//! `cargo xtask`: builds, runs, tests and benchmarks ningen-shikkaku, setting up
//! the eBPF toolchain on the way when it is missing.
//!
//! - `build`: the eBPF object, then the guardian in release mode.
//! - `build-ebpf`: only the eBPF object.
//! - `run [ARGS]`: build, then run `ningen-shikkaku guard ARGS` as root in the foreground.
//! - `test`: build, then every test (unit and end-to-end, which need root);
//!   `test --kernel K`: the end-to-end tests in a VM booting kernel K (see `vm`).
//! - `bench`: build, then the benchmarks (see `bench`); `bench --kernel K`:
//!   the cost to the machine in a VM booting kernel K (see `vm::bench`).
//! - `fuzz [--seconds N]`: run each fuzz target for N seconds (see `fuzz`).
//! - `install`, `uninstall`: put the guardian on the system (see `install`).

mod bench;
mod fuzz;
mod install;
mod toolchain;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object and the guardian (release).
    Build,
    /// Build only the eBPF object.
    BuildEbpf,
    /// Build, then run the guardian as root in the foreground.
    Run {
        /// Extra arguments for `ningen-shikkaku guard`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run every test (as root).
    Test {
        /// Run end-to-end tests in a VM booting this kernel instead:
        /// debian-6.1, debian-6.12 (installed from Debian) or a vmlinuz path.
        #[arg(long)]
        kernel: Option<String>,
        /// Extra kernel command line for the VM, e.g.
        /// 'lsm=lockdown,capability,landlock,yama,apparmor' (no BPF LSM).
        #[arg(long, requires = "kernel")]
        cmdline: Option<String>,
        /// Run the VM's tests named FILE::TEST that contain this (repeatable;
        /// default: a set that covers what differs between kernels).
        #[arg(long, requires = "kernel")]
        filter: Vec<String>,
    },
    /// Build, then measure the switch against its baselines and write docs/BENCHMARKS.md.
    Bench {
        /// Measure only the cost to the machine, in a VM booting this kernel
        /// (as for test --kernel); its table becomes a section of its own.
        #[arg(long)]
        kernel: Option<String>,
        /// Extra kernel command line for the VM: an lsm= list without bpf
        /// measures the tracepoint mode on the same kernel.
        #[arg(long, requires = "kernel")]
        cmdline: Option<String>,
    },
    /// (Run by bench --kernel inside the VM.) The cost-to-the-machine
    /// tables for BINARY, printed as markdown.
    #[command(hide = true)]
    BenchMachine {
        #[arg(long)]
        binary: PathBuf,
        #[arg(long)]
        rounds: usize,
    },
    /// Run each fuzz target (the frame parser, the state machine) for a while.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Build, then install the binary, man pages, completions, systemd unit
    /// and a commented policy file (kept if one is there).
    Install(LayoutArgs),
    /// Remove what install put in place (a changed policy file and the audit
    /// log stay); stops the service first.
    Uninstall(LayoutArgs),
}

/// Where install puts things.
#[derive(clap::Args)]
struct LayoutArgs {
    /// Everything but the policy file goes under it.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// The policy file goes in SYSCONFDIR/ningen-shikkaku/ (the guardian
    /// reads /etc's by default; the unit names another).
    #[arg(long, default_value = "/etc")]
    sysconfdir: PathBuf,
    /// Stage the files under this directory (for packaging) instead of
    /// installing them.
    #[arg(long)]
    destdir: Option<PathBuf>,
    /// Install this guardian binary instead of building one (how xtask
    /// hands a user's build to its own run under sudo).
    #[arg(long, hide = true)]
    binary: Option<PathBuf>,
}

impl LayoutArgs {
    fn layout(&self) -> anyhow::Result<install::Layout> {
        for path in [&self.prefix, &self.sysconfdir] {
            if !path.is_absolute() {
                bail!("{} must be an absolute path", path.display());
            }
        }
        Ok(install::Layout {
            destdir: self.destdir.clone(),
            prefix: self.prefix.clone(),
            sysconfdir: self.sysconfdir.clone(),
        })
    }

    /// True when the files go into the system itself, which takes root.
    fn in_place(&self) -> bool {
        self.destdir.is_none()
    }

    /// This xtask again, as root through sudo, with these paths and `binary`.
    fn as_root(&self, task: &str, binary: Option<&Path>) -> anyhow::Result<()> {
        let mut command = toolchain::as_root(std::env::current_exe()?, task)?;
        command
            .arg(task)
            .arg("--prefix")
            .arg(&self.prefix)
            .arg("--sysconfdir")
            .arg(&self.sysconfdir);
        if let Some(binary) = binary {
            command.arg("--binary").arg(binary);
        }
        toolchain::run(&mut command, &format!("xtask {task} as root"))
    }
}

/// Seconds each fuzz target runs in `cargo xtask test`: a smoke run over the
/// committed corpus; `cargo xtask fuzz` runs longer.
const TEST_FUZZ_SECONDS: u64 = 15;

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::Build => build(&root).map(drop),
        Task::BuildEbpf => toolchain::build_ebpf(&root).map(drop),
        Task::Run { args } => run(&root, &args),
        Task::Test { kernel: None, .. } => test(&root),
        Task::Test {
            kernel: Some(kernel),
            cmdline,
            filter,
        } => vm::test(
            &root,
            &vm::Request {
                kernel,
                cmdline,
                filters: filter,
            },
        ),
        Task::Fuzz { seconds } => fuzz::run_all(&root, seconds),
        Task::Bench {
            kernel: None,
            cmdline: _,
        } => {
            require_root("the benchmarks (they start real guardians)")?;
            let binary = build(&root)?;
            bench::run(&root, &binary)
        }
        Task::Bench {
            kernel: Some(kernel),
            cmdline,
        } => vm::bench(&root, &kernel, cmdline),
        Task::BenchMachine { binary, rounds } => {
            print!("{}", bench::machine_only(&binary, rounds)?);
            Ok(())
        }
        Task::Install(args) => {
            let layout = args.layout()?;
            let binary = match &args.binary {
                Some(binary) => binary.clone(),
                None => build(&root)?,
            };
            match args.in_place() && !toolchain::is_root() {
                true => args.as_root("install", Some(&binary)),
                false => install::install(&binary, &layout),
            }
        }
        Task::Uninstall(args) => match args.in_place() && !toolchain::is_root() {
            true => args.as_root("uninstall", None),
            false => install::uninstall(&args.layout()?),
        },
    }
}

/// The checkout this xtask was run from: cargo sets CARGO_MANIFEST_DIR when
/// it runs the xtask, which names this checkout even when the xtask binary
/// was built in another (a copied checkout with its target directory).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// Builds everything; returns the guardian binary's path.
pub(crate) fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let object = toolchain::build_ebpf(root)?;
    eprintln!("xtask: building the guardian (release)");
    let status = cargo()
        .current_dir(root)
        .args(["build", "--release", "--package", "guardian"])
        .env("NINGEN_SHIKKAKU_EBPF_OBJECT", &object)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the guardian failed");
    }
    Ok(root.join("target/release/ningen-shikkaku"))
}

fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let binary = build(root)?;
    eprintln!(
        "xtask: starting {} guard {} in the foreground (Ctrl-C stops it and wipes every \
         secret; use another terminal for the rest)",
        binary.display(),
        args.join(" ")
    );
    let status = toolchain::as_root(&binary, "the guardian")?
        .arg("guard")
        .args(args)
        .status()?;
    if !status.success() {
        bail!("the guardian exited with {status}");
    }
    Ok(())
}

fn test(root: &Path) -> anyhow::Result<()> {
    require_root("the end-to-end tests (they start a real guardian)")?;
    toolchain::ensure_test_tools()?;
    let binary = build(root)?;
    let object = toolchain::ebpf_object(root);
    let runs: [&[&str]; 2] = [
        // The end-to-end tests are ignored by plain `cargo test` (they need
        // root and this build); here they run with the rest.
        &[
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "guardian-ebpf",
            "--",
            "--include-ignored",
        ],
        &["test", "--release", "--package", "guardian-ebpf", "--lib"],
    ];
    for args in runs {
        eprintln!("xtask: cargo {}", args.join(" "));
        let status = cargo()
            .current_dir(root)
            .args(args)
            .env("NINGEN_SHIKKAKU_EBPF_OBJECT", &object)
            .env("NINGEN_SHIKKAKU_BIN", &binary)
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("tests failed");
        }
    }
    eprintln!("xtask: pytest reference/python");
    let status = Command::new("/usr/bin/python3")
        .args(["-m", "pytest", "-q", "reference/python/tests"])
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .context("cannot run pytest")?;
    if !status.success() {
        bail!("the Python reference's tests failed");
    }
    fuzz::run_all(root, TEST_FUZZ_SECONDS)
}

pub(crate) fn require_root(what: &str) -> anyhow::Result<()> {
    if !toolchain::is_root() {
        bail!(
            "{what} must run as root: in a root shell (sudo -i), cargo xtask ... \
             (plain sudo's PATH hides ~/.cargo/bin)"
        );
    }
    Ok(())
}

/// The cargo that is running this xtask.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
