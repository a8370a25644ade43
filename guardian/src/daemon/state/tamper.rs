//! Tamper attempts the kernel stopped: a process SIGKILLed at syscall entry
//! for ptracing or reading a holder, the guardian or its supervisor.

#![forbid(unsafe_code)]

use std::sync::Arc;

use guardian_ebpf::{Event, TamperSyscall};

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
        /// The supervisor.
        Supervisor = "supervisor",
        /// The guardian itself.
        Guardian = "guardian",
    }
}

impl<O: Os> Core<O> {
    /// Audits the attempt; if the target is a holder, wipes what it holds
    /// (unless the policy says audit only).
    pub(super) fn tamper(&mut self, event: &Event) {
        let (Some(attacker), Some(target)) =
            (Pid::new(event.pid as i32), Pid::new(event.other as i32))
        else {
            return;
        };
        let grant = self
            .sessions
            .holders
            .get(&target)
            .map(|holder| holder.grant);
        let keys: Vec<SecretKey> = grant
            .and_then(|grant| self.sessions.grants.get(&grant))
            .map(|grant| grant.secrets.iter().cloned().collect())
            .unwrap_or_default();
        let syscall = TamperSyscall::name(event.syscall);
        let role = self.role_of(target, grant.is_some());
        tracing::warn!(%attacker, %target, syscall, "tamper attempt stopped");
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
                "{syscall} (request {}) on {role} {target}; caller SIGKILLed",
                event.request
            )),
            latency: None,
        });
        if role == Role::Supervisor
            && let Some((supervisor, _)) = &self.supervisor
        {
            self.os.continue_if_stopped(Arc::clone(supervisor));
        }
        if !keys.is_empty() && self.config.tamper_response == TamperResponse::Wipe {
            self.trigger(Cause::Tamper, event.ktime_ns, keys, None);
        }
    }

    fn role_of(&self, target: Pid, holds: bool) -> Role {
        let supervisor = self.supervisor.as_ref().map(|(process, _)| process.pid());
        match holds {
            true => Role::Holder,
            false if supervisor == Some(target) => Role::Supervisor,
            false if target == self.os.guardian() => Role::Guardian,
            false => Role::Holder,
        }
    }
}
