//! Fuzzing with cargo-fuzz (libFuzzer): the socket's frame parser and the
//! state machine driven by sequences of requests and events (see `fuzz/`).
//!
//! It builds with the ordinary stable toolchain: `RUSTC_BOOTSTRAP=1` admits
//! the flags cargo-fuzz passes, and without a sanitizer it needs no nightly
//! runtime. Each run starts from the committed corpus (`fuzz/corpus/TARGET`)
//! and writes what it finds to `target/fuzz-corpus/TARGET`, so the committed
//! corpus only changes when someone minimises a long run into it.

use std::{path::Path, process::Command};

use anyhow::{Context, bail};

use crate::toolchain::{path_with_cargo_bin, run};

/// The fuzz targets, in `fuzz/fuzz_targets/`.
pub const TARGETS: [&str; 2] = ["frames", "switch"];
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Runs every target for `seconds` each; fails on the first crash (its input
/// is left in `fuzz/artifacts/TARGET/`).
pub fn run_all(root: &Path, seconds: u64) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    for target in TARGETS {
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let found = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&found).context("cannot make the corpus directory")?;
        let status = cargo_fuzz(root)
            .args(["run", "--sanitizer", "none", target])
            .arg(&found)
            .arg(root.join("fuzz/corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .status()
            .context("cannot run cargo fuzz")?;
        if !status.success() {
            bail!("fuzz target {target} failed; the input is in fuzz/artifacts/{target}/");
        }
    }
    Ok(())
}

fn cargo_fuzz(root: &Path) -> Command {
    let mut command = crate::cargo();
    command
        .arg("fuzz")
        .current_dir(root.join("fuzz"))
        .env("PATH", path_with_cargo_bin())
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    command
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let found = crate::cargo()
        .args(["fuzz", "--version"])
        .env("PATH", path_with_cargo_bin())
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (under a minute, once)");
    let mut command = crate::cargo();
    command.args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]);
    run(&mut command, "cargo install cargo-fuzz")
}
