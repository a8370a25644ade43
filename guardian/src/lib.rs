//! ningen-shikkaku: a dead-man's switch for secrets.
//!
//! # Layout
//! - [`cli`]: the command line; [`config`]: policy from config.toml;
//!   [`protocol`]: frames and messages on the socket.
//! - [`os`]: operating-system primitives: pids, pidfds and /proc
//!   ([`os::process`]), locked memory ([`os::secret_mem`]), per-exec cgroups
//!   ([`os::cgroup`]), self-hardening and the seccomp allowlist, the kernel
//!   clock, connected peers, who answers on the socket ([`os::socket_path`])
//!   and paths no other user can redirect ([`os::trusted_path`]).
//! - [`daemon`]: `guard`: set-up, the socket server ([`daemon::server`]), the
//!   supervisor that kills holders if the guardian dies
//!   ([`daemon::supervisor`]), and the state machine that owns every secret
//!   and rule ([`daemon::state`]).
//! - [`kernel`]: the eBPF link (load, maps, ring buffer).
//! - [`audit`]: the hash-chained audit log and its commit pipeline.
//! - [`client`]: the client subcommands (`put`, `get`, `exec`, `list`, ...).
//! - [`doctor`]: `doctor`: which protections this host gives, and the fixes.
//! - [`logging`]: the guardian's log lines, for a terminal or the journal.

/// Declares an enum that is written out (on the wire, in the audit log) as one
/// of a fixed set of strings, with `as_str`, `Display` and serde in step.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The text written out.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod audit;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod kernel;
pub mod logging;
pub mod os;
pub mod protocol;
