//! Operating-system primitives the guardian is built on: processes and
//! pidfds, locked memory for secrets, cgroup containment, the guardian's
//! self-hardening and its seccomp allowlist, the kernel clock, and who is on
//! the other end of a connection. Each wraps the raw calls of one concern;
//! the rest of the guardian uses these safe wrappers.

pub mod cgroup;
pub mod clock;
pub mod hardening;
pub mod peer;
pub mod pid_namespace;
pub mod process;
pub mod seccomp;
pub mod secret_mem;
