//! Self-protection: no core dumps, no ptrace-by-default, no new privileges,
//! every page locked, and (once initialised) a seccomp allowlist. Each step
//! that fails is logged and reported by `status`, never silently skipped.

use std::{fs, io};

use serde::Serialize;

use super::{process, seccomp};

/// What protections are in force, as `status` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Protections {
    /// False once PR_SET_DUMPABLE 0 took effect.
    pub dumpable: bool,
    /// RLIMIT_CORE (soft).
    pub core_limit: u64,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
    /// mlockall(MCL_CURRENT | MCL_FUTURE) succeeded.
    pub mlockall: bool,
    /// `"filter"` when the seccomp allowlist is installed, else `"disabled"`.
    pub seccomp: String,
    /// Syscalls the allowlist permits (0 without seccomp).
    pub seccomp_allowed: usize,
    /// VmLck of the guardian, in KiB; shown to root only, since it grows
    /// with every user's secrets.
    pub locked_kib: Option<u64>,
    /// RLIMIT_NOFILE (soft) after raising it.
    #[serde(default)]
    pub open_files_limit: u64,
}

/// Makes the process non-dumpable (no core file; /proc/PID/mem and ptrace
/// restricted to root) and sets RLIMIT_CORE to zero. Used by clients too.
pub fn forbid_core_dumps() -> io::Result<()> {
    nix::sys::prctl::set_dumpable(false)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    Ok(())
}

/// The core limit holders start with, soft and hard: 1 byte. The kernel
/// writes no core file smaller than a page, and pipes none to a
/// `core_pattern` helper at exactly 1 (its mark of a recursive crash),
/// whereas a limit of 0 still lets a piped helper have the whole dump. The
/// same uid cannot raise a hard limit, and the kernel programs stop anyone
/// else lowering it (see `prlimit64` in the read paths).
pub const HOLDER_CORE_LIMIT: u64 = 1;

/// Makes the process non-dumpable until it execs, and sets its core limit
/// to [`HOLDER_CORE_LIMIT`] (or leaves a lower one, which cannot be raised).
pub fn limit_holder_cores() -> io::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    nix::sys::prctl::set_dumpable(false)?;
    let (_, hard) = getrlimit(Resource::RLIMIT_CORE)?;
    let limit = HOLDER_CORE_LIMIT.min(hard);
    setrlimit(Resource::RLIMIT_CORE, limit, limit)?;
    Ok(())
}

/// Applies everything but mlockall and seccomp, which wait until
/// initialisation is done.
pub fn harden_process() -> io::Result<Protections> {
    forbid_core_dumps()?;
    nix::sys::prctl::set_no_new_privs()?;
    // The OOM killer's last choice, and the supervisor's (it inherits this):
    // a user who can exhaust memory must not make either die in its place.
    if let Err(err) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        tracing::warn!(%err, "cannot exempt the guardian from the OOM killer");
    }
    // One malloc arena: with mlockall(MCL_FUTURE), the 64 MiB arena glibc
    // reserves for each new thread would count as locked memory.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only adjusts allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let (core_limit, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE)?;
    Ok(Protections {
        dumpable: nix::sys::prctl::get_dumpable()?,
        core_limit,
        open_files_limit: raise_open_files(),
        ..Protections::default()
    })
}

/// Most descriptors the guardian asks for: each holder it tracks and each
/// connection it serves costs some, and a trigger must never fail for want of
/// one (a shell's usual 1024 is far too few for a big holder tree).
const OPEN_FILES: u64 = 1 << 20;

/// Raises RLIMIT_NOFILE as far as root may (the kernel's `fs.nr_open`), and
/// returns the soft limit in force.
fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(OPEN_FILES);
    let wanted = nr_open.min(OPEN_FILES);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < wanted
        && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted.max(hard)).is_err()
    {
        // Without CAP_SYS_RESOURCE, the hard limit is as far as it goes.
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
}

/// Locks every page, present and future, where RLIMIT_MEMLOCK allows. Called
/// once the eBPF link is loaded and its scratch memory given back, so only
/// what the guardian keeps is locked.
///
/// MCL_ONFAULT locks each page when it is first touched instead of faulting in
/// every mapped page now: the heap holes malloc_trim gave back, the guard
/// pages and arena reserves would otherwise become resident, locked and
/// useless. A page with data in it is always locked; a page never touched has
/// nothing to swap.
pub fn lock_all_memory(protections: &mut Protections) {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    let now_and_later = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    // nix does not name MCL_ONFAULT (Linux 4.4); kernels before it say EINVAL.
    let on_fault = MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT);
    let locked = match mlockall(now_and_later | on_fault) {
        Err(nix::errno::Errno::EINVAL) => mlockall(now_and_later),
        other => other,
    };
    if let Err(err) = locked {
        tracing::warn!(%err, "mlockall failed (RLIMIT_MEMLOCK?): only secret pages are locked");
    }
    protections.mlockall = locked.is_ok();
}

/// Installs the seccomp allowlist, or logs why it could not.
pub fn install_seccomp(protections: &mut Protections) {
    match seccomp::install() {
        Ok(allowed) => protections.seccomp_allowed = allowed,
        Err(err) => {
            tracing::warn!(%err, "seccomp unavailable: running without a syscall allowlist")
        }
    }
}

/// `protections` with the live values from /proc/self/status.
pub fn current(protections: &Protections) -> Protections {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key| process::status_field(&status, key).and_then(process::first_number::<u64>);
    Protections {
        no_new_privs: field("NoNewPrivs") == Some(1),
        seccomp: if field("Seccomp") == Some(2) {
            "filter"
        } else {
            "disabled"
        }
        .to_owned(),
        locked_kib: field("VmLck"),
        ..protections.clone()
    }
}
