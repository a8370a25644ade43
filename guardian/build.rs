//! Embeds the eBPF object built by `cargo xtask build-ebpf`. Without one (a plain
//! `cargo build`), an empty object is embedded and the guardian runs on its
//! pidfd fallback, saying so in `status`.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=NINGEN_SHIKKAKU_EBPF_OBJECT");
    let object = env::var_os("NINGEN_SHIKKAKU_EBPF_OBJECT").map_or_else(
        || {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            manifest.join("../target/ebpf/bpfel-unknown-none/release/guardian-ebpf")
        },
        PathBuf::from,
    );
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("guardian-ebpf.o");
    let bytes = fs::read(&object).unwrap_or_default();
    if let Err(err) = fs::write(&out, bytes) {
        panic!("cannot write {}: {err}", out.display());
    }
}
