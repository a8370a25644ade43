//! Tamper attempts the kernel stopped: a process SIGKILLed for reaching into
//! a holder, a member of a bound session, the guardian or its supervisor (by
//! ptrace, process_vm_*, pidfd_getfd, or procfs `environ`/`mem`). The tamper
//! policy applies to what the target could reach: a holder's grant, or every
//! secret bound to a member's leader. An attempt the kernel refused anyway
//! is audited and costs no secret.

#![forbid(unsafe_code)]

use std::sync::Arc;

use guardian_ebpf::{Event, TamperSyscall, flags};

use super::{
    Core, SecretKey,
    os::{Os, Process},
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
    }
}

impl<O: Os> Core<O> {
    /// Audits the attempt; unless the kernel refused it or the policy says
    /// audit only, wipes what the target could reach.
    pub(super) fn tamper(&mut self, event: &Event) {
        let (Some(attacker), Some(target)) =
            (Pid::new(event.pid as i32), Pid::new(event.other as i32))
        else {
            return;
        };
        let (role, keys) = self.reach_of(target, event.grant);
        self.record_tamper(event, attacker, target, role, &keys);
        let refused = event.flags & flags::REFUSED_BY_KERNEL != 0;
        let wipes =
            !refused && !keys.is_empty() && self.config.tamper_response == TamperResponse::Wipe;
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

    fn record_tamper(
        &mut self,
        event: &Event,
        attacker: Pid,
        target: Pid,
        role: Role,
        keys: &[SecretKey],
    ) {
        let refused = event.flags & flags::REFUSED_BY_KERNEL != 0;
        let syscall = TamperSyscall::name(event.syscall);
        let table = match event.flags & flags::COMPAT != 0 {
            true => " (32-bit)",
            false => "",
        };
        let verdict = match refused {
            true => "refused by the kernel; caller SIGKILLed; no secret wiped",
            false => "caller SIGKILLed",
        };
        tracing::warn!(%attacker, %target, syscall, refused, "tamper attempt stopped");
        self.record(Entry {
            action: Action::Tamper,
            names: keys.iter().map(|key| key.name.to_string()).collect(),
            peer: Some(Peer {
                pid: attacker,
                uid: Uid(event.uid),
                gid: event.gid,
                exe: self.os.exe_of(attacker),
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

    /// What the target is, and the secrets it could reach: a holder's
    /// grant's, or those bound to the leader whose session it is in.
    fn reach_of(&self, target: Pid, leader: u32) -> (Role, Vec<SecretKey>) {
        let supervisor = self.supervisor.as_ref().map(|(process, _)| process.pid());
        if let Some(holder) = self.sessions.holders.get(&target) {
            let keys = self
                .sessions
                .grants
                .get(&holder.grant)
                .map(|grant| grant.secrets.iter().cloned().collect())
                .unwrap_or_default();
            return (Role::Holder, keys);
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
