//! What the virtual machine needs on the host, installed once: QEMU, a
//! static busybox (virtme-ng builds the guest's initramfs with it, which
//! loads the 9p modules Debian's kernels need to mount the host's files),
//! the kernel, and virtme-ng from PyPI in a venv of its own.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::toolchain::{self, run};

/// virtme-ng's version, pinned: its command line and guest layout change
/// between releases, and this module relies on both.
const VIRTME_NG_VERSION: &str = "1.42";

/// Programs the machine needs, with the Debian package of each.
const VM_TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ("/bin/busybox", "busybox-static"),
];

/// A Debian kernel, by the name `--kernel` gives it.
pub struct DebianKernel {
    name: &'static str,
    /// The package that brings it.
    package: &'static str,
    /// How its release starts (`/boot/vmlinuz-RELEASE`).
    release: &'static str,
}

const DEBIAN_KERNELS: &[DebianKernel] = &[
    // Debian 12's default kernel.
    DebianKernel {
        name: "debian-6.1",
        package: "linux-image-amd64",
        release: "6.1.",
    },
    // Debian 12's backported 6.12 (Debian 13's kernel).
    DebianKernel {
        name: "debian-6.12",
        package: "linux-image-6.12-amd64",
        release: "6.12.",
    },
];

/// The kernel to boot.
pub enum Kernel {
    /// One of [`DEBIAN_KERNELS`], installed from Debian when missing.
    Debian(&'static DebianKernel),
    /// A vmlinuz file given by its path.
    File(PathBuf),
}

impl Kernel {
    /// A Debian kernel's name, or else a path.
    pub fn parse(arg: &str) -> Self {
        DEBIAN_KERNELS
            .iter()
            .find(|kernel| kernel.name == arg)
            .map_or_else(|| Self::File(arg.into()), Self::Debian)
    }

    /// A short name for the results directory and the report.
    pub fn label(&self) -> String {
        match self {
            Self::Debian(kernel) => kernel.name.to_owned(),
            Self::File(path) => path.file_name().map_or_else(
                || "kernel".to_owned(),
                |name| name.to_string_lossy().into_owned(),
            ),
        }
    }
}

/// Installs what is missing of QEMU, busybox and the kernel; returns the
/// vmlinuz to boot.
pub fn ensure_vm_tools(kernel: &Kernel) -> anyhow::Result<PathBuf> {
    toolchain::install_missing("what the VM needs", VM_TOOLS)?;
    match kernel {
        Kernel::File(path) if path.is_file() => Ok(path.clone()),
        Kernel::File(path) => bail!(
            "{} is not a kernel file; --kernel takes {} or a vmlinuz path",
            path.display(),
            DEBIAN_KERNELS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kernel::Debian(debian) => {
            if let Some(vmlinuz) = find_vmlinuz(debian.release) {
                return Ok(vmlinuz);
            }
            eprintln!(
                "xtask: installing the {} kernel from Debian: {}",
                debian.name, debian.package
            );
            toolchain::apt_install(&[debian.package])?;
            find_vmlinuz(debian.release).with_context(|| {
                format!(
                    "{} installed no /boot/vmlinuz-{}*-amd64",
                    debian.package, debian.release
                )
            })
        }
    }
}

/// The newest `/boot/vmlinuz-RELEASE*-amd64` of the generic flavour: the
/// `cloud` one has no 9p module, so virtme-ng could not mount the host's
/// files in it, and `rt` is another kernel altogether.
fn find_vmlinuz(release: &str) -> Option<PathBuf> {
    let prefix = format!("vmlinuz-{release}");
    let mut found: Vec<String> = fs::read_dir("/boot")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix) && name.ends_with("-amd64"))
        .filter(|name| !name.ends_with("-cloud-amd64") && !name.ends_with("-rt-amd64"))
        .collect();
    found.sort_by_key(|name| version_key(name));
    found.pop().map(|name| Path::new("/boot").join(name))
}

/// The numbers in a kernel's name, so that `6.1.0-100` sorts after `6.1.0-99`.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// virtme-ng's `vng`, installed from PyPI into `target/vm/virtme-ng-VERSION/`
/// the first time: a venv keeps it off the system's Python.
pub fn ensure_virtme_ng(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join(format!("target/vm/virtme-ng-{VIRTME_NG_VERSION}"));
    let vng = venv.join("bin/vng");
    if vng.exists() {
        return Ok(vng);
    }
    eprintln!(
        "xtask: installing virtme-ng {VIRTME_NG_VERSION} from PyPI into {} (once)",
        venv.display()
    );
    // Debian's python3 makes venvs only with python3-venv (ensurepip).
    let has_ensurepip = Command::new("python3")
        .args(["-c", "import ensurepip"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_ensurepip {
        toolchain::apt_install(&["python3-venv"])?;
    }
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .arg(format!("virtme-ng=={VIRTME_NG_VERSION}")),
        "pip install virtme-ng",
    )?;
    Ok(vng)
}
