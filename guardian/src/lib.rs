//! ningen-shikkaku: a dead-man's switch for secrets.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`client`]: the client subcommands (`put`, `get`, `exec`, `list`, `revoke`, `status`).
//! - [`daemon`]: `guard`: set-up, the socket server and the core loop.
//! - [`config`]: policy from config.toml.
//! - [`core`]: the state and every rule: who may do what, triggers, wipe-then-kill.
//! - [`vault`]: the secrets; [`sessions`]: leaders, holders and grants.
//! - [`cgroup`]: one cgroup per exec; [`supervisor`]: kills holders if the guardian dies.
//! - [`kernel`]: the eBPF link (load, maps, ring buffer).
//! - [`protocol`]: frames and messages on the socket.
//! - [`secret_mem`]: locked memory for secret bytes; [`audit`]: the audit log.
//! - [`process`]: pids, pidfds and /proc; [`peer`]: who is connected.
//! - [`hardening`]: the guardian's self-protection, with [`seccomp`]'s allowlist;
//!   [`clock`]: the kernel clock.

pub mod audit;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod core;
pub mod daemon;
pub mod hardening;
pub mod kernel;
pub mod peer;
pub mod process;
pub mod protocol;
pub mod seccomp;
pub mod secret_mem;
pub mod sessions;
pub mod supervisor;
pub mod vault;
