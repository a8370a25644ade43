//! Self-protection applied at start-up: no core dumps and no ptrace-by-default
//! of processes that hold secret bytes.

use std::io;

/// Makes the process non-dumpable (no core file, /proc/PID/mem and ptrace
/// restricted to root) and sets RLIMIT_CORE to zero.
pub fn forbid_core_dumps() -> io::Result<()> {
    nix::sys::prctl::set_dumpable(false)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    Ok(())
}
