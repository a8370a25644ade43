//! The eBPF toolchain: finds (or, as root on Debian/Ubuntu, installs) a Rust
//! compiler that can build `core` for `bpfel-unknown-none` and the bpf-linker,
//! then builds the programs.
//!
//! Two compilers work. A rustup nightly with the `rust-src` component is the
//! ordinary aya route. Where rustup cannot fetch components, Debian's
//! `rustc-web` (bookworm-security) ships a recent rustc with its library
//! source, and `RUSTC_BOOTSTRAP=1` lets it use `-Z build-std`. The bpf-linker is
//! then built against Debian's LLVM 22. Every check is a file test or one quick
//! command, so when all is present the check takes well under two seconds.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// Debian packages that give a build-std capable rustc and LLVM for bpf-linker.
const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_LIBRARY_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";
const LLVM_22: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// A compiler able to build the eBPF crate.
enum Compiler {
    /// `rustup run nightly` with rust-src.
    RustupNightly,
    /// Debian's rustc-web with RUSTC_BOOTSTRAP.
    Debian,
}

/// Where the built object lands.
pub fn ebpf_object(root: &Path) -> PathBuf {
    root.join("target/ebpf/bpfel-unknown-none/release/guardian-ebpf")
}

/// Builds the eBPF programs, setting the toolchain up first if needed.
pub fn build_ebpf(root: &Path) -> anyhow::Result<PathBuf> {
    let compiler = find_or_install_compiler()?;
    ensure_bpf_linker()?;
    eprintln!("xtask: building the eBPF programs");
    let mut command = match compiler {
        Compiler::RustupNightly => {
            let mut command = Command::new("rustup");
            command.args(["run", "nightly", "cargo"]);
            command
        }
        Compiler::Debian => {
            let mut command = Command::new(DEBIAN_CARGO);
            command
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1");
            command
        }
    };
    // The crate's .cargo/config.toml sets the target, build-std and the linker.
    let status = command
        .current_dir(root.join("guardian-ebpf"))
        .args(["build", "--release"])
        .env("PATH", path_with_cargo_bin())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("cannot run cargo for the eBPF crate")?;
    if !status.success() {
        bail!("building the eBPF programs failed");
    }
    Ok(ebpf_object(root))
}

fn find_or_install_compiler() -> anyhow::Result<Compiler> {
    if nightly_has_rust_src() {
        return Ok(Compiler::RustupNightly);
    }
    if debian_compiler_present() {
        return Ok(Compiler::Debian);
    }
    install_debian_packages()?;
    if debian_compiler_present() {
        return Ok(Compiler::Debian);
    }
    bail!(
        "no compiler can build the eBPF programs: install a rustup nightly with rust-src \
         (rustup toolchain install nightly --component rust-src) or Debian's {}",
        DEBIAN_PACKAGES.join(" ")
    )
}

fn nightly_has_rust_src() -> bool {
    let Ok(output) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    output.status.success()
        && Path::new(&sysroot)
            .join("lib/rustlib/src/rust/library/core")
            .exists()
}

fn debian_compiler_present() -> bool {
    Path::new(DEBIAN_CARGO).exists()
        && Path::new(DEBIAN_LIBRARY_SRC).exists()
        && Path::new(LLVM_22).join("bin/llvm-config").exists()
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program` run as root: itself for root, through sudo for anyone else
/// (which asks for the user's password on the terminal). `why` says what
/// needs root.
pub fn as_root(program: impl AsRef<std::ffi::OsStr>, why: &str) -> anyhow::Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    if !Path::new("/usr/bin/sudo").exists() {
        bail!("{why} needs root, and there is no sudo here: run this as root");
    }
    eprintln!("xtask: {why} needs root: asking sudo");
    let mut command = Command::new("/usr/bin/sudo");
    command.arg("--").arg(program);
    Ok(command)
}

fn install_debian_packages() -> anyhow::Result<()> {
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "the eBPF toolchain is missing; on Debian/Ubuntu, xtask installs it as root \
             (packages: {})",
            DEBIAN_PACKAGES.join(" ")
        );
    }
    eprintln!(
        "xtask: installing the eBPF toolchain from Debian: {}",
        DEBIAN_PACKAGES.join(" ")
    );
    apt_install(DEBIAN_PACKAGES)
}

/// Installs `packages` from Debian (as root, through sudo if need be).
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    run(
        as_root("apt-get", "installing Debian packages")?.args(["update", "-q"]),
        "apt-get update",
    )?;
    run(
        // Through env(1): sudo would drop the variable.
        as_root("/usr/bin/env", "installing Debian packages")?
            .args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages),
        "apt-get install",
    )
}

/// Programs the tests run (an attacker in Python, strace, setpriv, pytest for
/// the Python reference, the install test's systemd-analyze, man and shells,
/// the lock tests' dbus-daemon and the Python D-Bus their fake logind uses),
/// with the Debian package that provides each.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/python3", "python3"),
    ("/usr/bin/strace", "strace"),
    ("/usr/bin/setpriv", "util-linux"),
    ("/usr/bin/pytest-3", "python3-pytest"),
    // The everyday tools of tests/tests/everyday_tools.rs.
    ("/usr/bin/ps", "procps"),
    ("/usr/bin/pstree", "psmisc"),
    ("/usr/bin/lsof", "lsof"),
    // The install test: the unit, the man pages, and completion in each shell.
    ("/usr/bin/systemd-analyze", "systemd"),
    ("/usr/bin/man", "man-db"),
    ("/usr/bin/zsh", "zsh"),
    ("/usr/bin/fish", "fish"),
    // The lock and suspend tests: a private system bus and a fake logind.
    ("/usr/bin/dbus-daemon", "dbus-daemon"),
    (
        "/usr/lib/python3/dist-packages/dbus/__init__.py",
        "python3-dbus",
    ),
    (
        "/usr/lib/python3/dist-packages/gi/__init__.py",
        "python3-gi",
    ),
];

/// Installs the tests' tools from Debian when any is missing.
pub fn ensure_test_tools() -> anyhow::Result<()> {
    install_missing("test tools", TEST_TOOLS)
}

/// Installs, from Debian, the package of each `(path, package)` in `tools`
/// whose path is missing; `what` names them for the user.
pub fn install_missing(what: &str, tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {what} from Debian: {}",
        missing.join(" ")
    );
    apt_install(&missing)
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let found = Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", path_with_cargo_bin())
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (takes a few minutes, once)");
    let mut command = crate::cargo();
    command.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]);
    if Path::new(LLVM_22).exists() {
        // Build against Debian's LLVM 22 rather than downloading one.
        command
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_22)
            .env("PATH", format!("{LLVM_22}/bin:{}", path_with_cargo_bin()));
    }
    run(&mut command, "cargo install bpf-linker")
}

/// PATH with ~/.cargo/bin, where cargo install puts bpf-linker and cargo-fuzz.
pub fn path_with_cargo_bin() -> String {
    let path = env::var("PATH").unwrap_or_default();
    let cargo_home = env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", env::var("HOME").unwrap_or_default()));
    format!("{cargo_home}/bin:{path}")
}

/// Runs `command`, failing with `what` unless it succeeds.
pub fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed with {status}");
    }
    Ok(())
}
