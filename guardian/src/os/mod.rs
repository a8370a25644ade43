//! Operating-system primitives the guardian is built on: processes and
//! pidfds, locked memory for secrets, cgroup containment, the guardian's
//! self-hardening and its seccomp allowlist, the kernel clock, who is on the
//! other end of a connection, who answers on the socket path, and paths no
//! other user can redirect. Each wraps the raw calls of one concern;
//! the rest of the guardian uses these safe wrappers.

pub mod cgroup;
pub mod clock;
pub mod fuse;
pub mod hardening;
pub mod peer;
pub mod pid_namespace;
pub mod process;
pub mod seccomp;
pub mod secret_file;
pub mod secret_mem;
pub mod socket_path;
pub mod trusted_path;
