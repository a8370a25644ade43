//! Tamper attempts the kernel stopped: a process SIGKILLed for reaching into
//! a holder, a member of a bound session, the guardian or its supervisor (by
//! ptrace, process_vm_*, pidfd_getfd, or procfs `environ`/`mem`), or for
//! opening a secret file of a grant it is not in. The tamper
//! policy applies to what the target could reach: a holder's grant, or every
//! secret bound to a member's leader. An attempt the kernel refused anyway
//! is audited and costs no secret.
//!
//! The kernel sends at most [`TAMPER_BURST`] records per caller uid a second
//! (each caller is stopped all the same); the attempts past that, and records
//! lost to a full ring, are summed up in the audit log once a second while
//! they keep coming. Neither wipes anything: the attempts failed.

#![forbid(unsafe_code)]

use std::{collections::HashMap, sync::Arc, time::Duration};

use guardian_ebpf::{Event, TAMPER_BURST, TamperSyscall, flags};

use super::{
    Core, Msg, SecretKey,
    os::{KernelMaps, Os, Process, Task},
    sessions::GrantId,
    triggers::Cause,
};
use crate::{
    audit::{Action, Entry, Outcome},
    config::TamperResponse,
    os::{
        peer::Peer,
        process::{Pid, Uid},
    },
};

text_enum! {
    /// What the target of a tamper attempt is to the guardian.
    pub enum Role {
        /// A process holding secrets.
        Holder = "holder",
        /// A process that may ask for a bound leader's secrets (the leader,
        /// its session, their descendants).
        Member = "session member",
        /// The supervisor.
        Supervisor = "supervisor",
        /// The guardian itself.
        Guardian = "guardian",
        /// A secret delivered as a file, named by its grant.
        SecretFile = "secret file of grant",
    }
}

/// How often attempts the kernel only counted are summed up, while they come.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// What the audit log has already said of the attempts the kernel counted
/// but did not report one by one.
#[derive(Default)]
pub(super) struct TamperBooks {
    /// Per uid, the kernel's total of suppressed attempts last audited.
    suppressed: HashMap<Uid, u64>,
    /// The kernel's total of lost records last audited.
    lost: u64,
    /// The next summary, while one is due.
    summary: Option<Task>,
}

impl<O: Os> Core<O> {
    /// Audits the attempt; unless the kernel refused it or the policy says
    /// audit only (`tamper_response`; `on_environ_read` for an open or read
    /// of an environment), wipes what the target could reach.
    pub(super) fn tamper(&mut self, event: &Event) {
        self.expect_tamper_summary();
        let Some(attacker) = Pid::new(event.pid as i32) else {
            return;
        };
        if event.syscall == TamperSyscall::OpenSecretFile as u32 {
            return self.secret_file_opened(event, attacker);
        }
        let Some(target) = Pid::new(event.other as i32) else {
            return;
        };
        let (role, keys) = self.reach_of(target, event.grant);
        let refused = event.flags & flags::REFUSED_BY_KERNEL != 0;
        let environ = [
            TamperSyscall::OpenEnviron,
            TamperSyscall::ReadEnviron,
            TamperSyscall::IoUringOpenEnviron,
        ];
        let response = match environ.iter().any(|&kind| event.syscall == kind as u32) {
            true => self.config.on_environ_read,
            false => self.config.tamper_response,
        };
        let wipes = !refused && !keys.is_empty() && response == TamperResponse::Wipe;
        self.record_tamper(event, attacker, target, role, &keys, wipes);
        let attach = event.syscall == TamperSyscall::Ptrace as u32;
        // An attach queues a SIGSTOP that the killed tracer cannot undo: the
        // target runs on, unless it is a holder about to die anyway.
        let stopped = match role {
            Role::Supervisor => self
                .supervisor
                .as_ref()
                .map(|(process, _)| Arc::clone(process)),
            Role::Holder if wipes => None,
            Role::Holder | Role::Member if attach => self.os.open(target).ok().map(Arc::new),
            _ => None,
        };
        if let Some(process) = stopped {
            self.os.continue_if_stopped(process);
        }
        if wipes {
            self.trigger(Cause::Tamper, event.ktime_ns, keys, None);
        }
    }

    /// A secret file of grant `event.request` opened from outside the grant:
    /// the grant's secrets were within the attacker's reach.
    fn secret_file_opened(&mut self, event: &Event, attacker: Pid) {
        let grant = event.request as GrantId;
        let keys = self.sessions.secrets_of(grant);
        let wipes = !keys.is_empty() && self.config.tamper_response == TamperResponse::Wipe;
        self.record_tamper(event, attacker, grant, Role::SecretFile, &keys, wipes);
        if wipes {
            self.trigger(Cause::Tamper, event.ktime_ns, keys, None);
        }
    }

    fn record_tamper(
        &mut self,
        event: &Event,
        attacker: Pid,
        target: impl std::fmt::Display,
        role: Role,
        keys: &[SecretKey],
        wipes: bool,
    ) {
        let refused = event.flags & flags::REFUSED_BY_KERNEL != 0;
        let syscall = TamperSyscall::name(event.syscall);
        let table = match event.flags & flags::COMPAT != 0 {
            true => " (32-bit)",
            false => "",
        };
        // What was done to the caller, then what it cost the target.
        let done = match (
            event.flags & flags::DENIED != 0,
            takes_descriptor(event.syscall),
        ) {
            (true, _) => "denied with an error before any byte was copied; the caller lives",
            // A memfd or perf buffer takes no lock of the ward's: a process
            // sharing the caller's descriptor table keeps what it took.
            (false, true) => {
                "caller SIGKILLed before it returned; a process sharing its descriptor table \
                 keeps the descriptor it took"
            }
            (false, false) => "caller SIGKILLed before any byte was copied",
        };
        let cost = match (wipes, keys.is_empty()) {
            (true, _) => "secrets wiped",
            (false, true) => "nothing to wipe",
            (false, false) => "no secret wiped (policy: audit)",
        };
        let verdict = match refused {
            true => "refused by the kernel with its own error, as for any process; the caller \
                     lives; no secret wiped"
                .to_owned(),
            false => format!("{done}; {cost}"),
        };
        tracing::warn!(%attacker, %target, %role, syscall, refused, "tamper attempt stopped");
        self.record(Entry {
            action: Action::Tamper,
            names: keys.iter().map(|key| key.name.to_string()).collect(),
            peer: Some(Peer {
                pid: attacker,
                uid: Uid(event.uid),
                gid: event.gid,
                exe: self.exe_of(attacker, event),
                comm: event.comm_str().to_owned(),
                status: None,
                process: None,
            }),
            leader: None,
            outcome: Outcome::Deny,
            reason: Some(format!(
                "{syscall}{table} (request {}) on {role} {target}; {verdict}",
                event.request
            )),
            latency: None,
        });
    }

    /// The attacker's executable: the name the kernel took at the attempt,
    /// with its path from `/proc/PID/exe` where that still names the same
    /// file (a denied caller lives on, and may exec something else before
    /// the guardian looks; a killed one is gone).
    fn exe_of(&self, attacker: Pid, event: &Event) -> String {
        let path = self.os.exe_of(attacker);
        let name = event.exe_str();
        let same = std::path::Path::new(&path)
            .file_name()
            .is_some_and(|file| file.to_string_lossy().starts_with(name));
        match (name, path) {
            ("", path) => path,
            (_, path) if same => path,
            (name, path) if path == "?" => {
                format!("{name} (name only: it died before its path was read)")
            }
            (name, path) => format!("{name} (at the attempt; {path} by the time it was read)"),
        }
    }

    /// Audits what the kernel counted since the last summary: per uid, the
    /// attempts past the rate limit, and records lost to a full ring. Looks
    /// again in a second if there were any, since a flood may go on.
    pub(super) fn summarize_tamper(&mut self) {
        self.tamper_books.summary = None;
        let Some(kernel) = &self.kernel else {
            return;
        };
        let (suppressed, lost) = (kernel.tamper_suppressed(), kernel.tamper_lost());
        let mut reasons = Vec::new();
        for (uid, total) in suppressed {
            let before = self.tamper_books.suppressed.insert(uid, total);
            // A uid evicted from the kernel's table starts again from zero.
            let new = total.saturating_sub(before.filter(|&b| b <= total).unwrap_or(0));
            if new > 0 {
                reasons.push(format!(
                    "{new} more attempts by uid {uid} past the limit of {TAMPER_BURST} records \
                     a second; each caller stopped (denied, or SIGKILLed where the kernel cannot \
                     deny), none recorded one by one, no secret wiped"
                ));
            }
        }
        if lost > self.tamper_books.lost {
            reasons.push(format!(
                "{} tamper records lost to a full ring buffer; each caller stopped, no \
                 secret wiped for them",
                lost - self.tamper_books.lost
            ));
            self.tamper_books.lost = lost;
        }
        if reasons.is_empty() {
            return;
        }
        for reason in reasons {
            tracing::warn!(%reason, "tamper flood");
            self.record(Entry::notice(Action::Tamper, reason));
        }
        self.expect_tamper_summary();
    }

    fn expect_tamper_summary(&mut self) {
        if self.tamper_books.summary.is_none() {
            self.tamper_books.summary = Some(self.os.after(SUMMARY_EVERY, Msg::TamperSummary));
        }
    }

    /// What the target is, and the secrets it could reach: a holder's
    /// grant's, or those bound to the leader whose session it is in.
    fn reach_of(&self, target: Pid, leader: u32) -> (Role, Vec<SecretKey>) {
        let supervisor = self.supervisor.as_ref().map(|(process, _)| process.pid());
        if let Some(holder) = self.sessions.holders.get(&target) {
            return (Role::Holder, self.sessions.secrets_of(holder.grant));
        }
        if supervisor == Some(target) {
            return (Role::Supervisor, Vec::new());
        }
        if target == self.os.guardian() {
            return (Role::Guardian, Vec::new());
        }
        match Pid::new(leader as i32) {
            Some(leader) if self.sessions.leaders.contains_key(&leader) => {
                (Role::Member, self.vault.bound_to(leader))
            }
            // A holder the guardian has already forgotten, or a member of a
            // session whose secrets are gone: nothing left to wipe.
            _ => (Role::Member, Vec::new()),
        }
    }
}

/// True for a call stopped after it installed a descriptor whose reads the
/// address-space-lock program does not see (a secret file's memfd, any file
/// taken by pidfd_getfd, a perf event's buffer).
fn takes_descriptor(syscall: u32) -> bool {
    [
        TamperSyscall::OpenSecretFile,
        TamperSyscall::PidfdGetfd,
        TamperSyscall::PerfEventOpen,
    ]
    .iter()
    .any(|&kind| kind as u32 == syscall)
}
