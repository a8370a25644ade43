//! The state machine driven in-process against a fake world: every rule of
//! the switch, as an ordinary user, in milliseconds.

mod access;
mod audit;
mod binding;
mod describing;
mod environ;
mod files;
mod holders;
mod liveness;
mod replacing;
mod tamper;
mod triggers;

use std::time::Duration;

use guardian_ebpf::{EventKind, HolderState, TamperSyscall};

use super::{
    Msg, Reply, RequestError,
    fake::{self, Effect, GUARDIAN, Harness, Parts, SUPERVISOR, event},
};
use crate::{
    config::{Config, TamperResponse},
    daemon::state::SecretKey,
    os::{
        process::{Pid, Uid},
        secret_mem::SecretBuf,
    },
    protocol::{
        Containment, ExecNames, FailClosed, ForkTracking, MAX_REPLY_BYTES, MAX_SECRET, Request,
        Response, SecretName, TamperProtection, Ttl, WatchMode,
    },
};

const ALICE: u32 = 1000;
const BOB: u32 = 1001;

fn name(raw: &str) -> SecretName {
    raw.parse().unwrap()
}

fn bytes(value: &[u8]) -> SecretBuf {
    let mut buf = SecretBuf::new(value.len()).unwrap();
    buf.as_mut_slice().copy_from_slice(value);
    buf
}

fn put_request(secret: &str, bind: Option<i32>, ttl_secs: Option<u64>) -> Request {
    Request::Put {
        name: name(secret),
        bind: bind.map(|raw| Pid::new(raw).unwrap()),
        ttl_secs: ttl_secs.map(|secs| Ttl::try_from(secs).unwrap()),
        len: 6,
        replace: false,
    }
}

fn get_request(secret: &str) -> Request {
    Request::Get { name: name(secret) }
}

fn exec_request(secrets: &[&str]) -> Request {
    Request::Exec {
        names: ExecNames::try_from(
            secrets
                .iter()
                .map(|secret| name(secret))
                .collect::<Vec<_>>(),
        )
        .unwrap(),
        delivery: Vec::new(),
    }
}

impl Harness {
    /// `put` of `secret` (value "s3cret") from a child of `pid` in its
    /// session, as a shell runs the client.
    fn put(&mut self, pid: i32, secret: &str, bind: Option<i32>) -> Result<Reply, RequestError> {
        let client = self.member(pid);
        self.try_request(
            client,
            put_request(secret, bind, None),
            Some(bytes(b"s3cret")),
        )
    }

    /// `put` that must succeed; returns the leader it was bound to.
    fn stored(&mut self, pid: i32, secret: &str) -> i32 {
        match self.put(pid, secret, None).unwrap().response {
            Response::Stored { leader, .. } => leader,
            other => panic!("not stored: {other:?}"),
        }
    }

    /// `put` of `secret` with a TTL of `ttl_secs`, which must succeed.
    fn stored_for(&mut self, pid: i32, secret: &str, ttl_secs: u64) {
        let put = put_request(secret, None, Some(ttl_secs));
        let client = self.member(pid);
        self.try_request(client, put, Some(bytes(b"s3cret")))
            .unwrap();
    }

    /// The newest trigger record.
    fn last_trigger(&self) -> serde_json::Value {
        self.world.lock().records_of("trigger").pop().unwrap()
    }

    fn get(&mut self, pid: i32, secret: &str) -> Result<Vec<u8>, RequestError> {
        let reply = self.try_request(pid, get_request(secret), None)?;
        Ok(reply.secrets[0].as_slice().to_vec())
    }

    /// `exec` that must succeed: `pid` becomes a holder.
    fn holds(&mut self, pid: i32, secrets: &[&str]) {
        let reply = self.try_request(pid, exec_request(secrets), None).unwrap();
        assert_eq!(reply.secrets.len(), secrets.len());
    }

    fn holds_secret(&self, uid: u32, secret: &str) -> bool {
        let key = SecretKey {
            owner: Uid(uid),
            name: name(secret),
        };
        self.core.vault.get(&key).is_some()
    }

    fn revoke(&mut self, pid: i32, secret: &str) -> Response {
        let request = Request::Revoke { name: name(secret) };
        self.try_request(pid, request, None).unwrap().response
    }

    fn tamper(&mut self, attacker: i32, target: i32) {
        self.tamper_by(attacker, target, TamperSyscall::ProcessVmReadv, 0, 0);
    }

    /// A tamper report of `syscall` on `target`, a member of `leader`'s
    /// session (0: none), with event `flags`.
    fn tamper_by(
        &mut self,
        attacker: i32,
        target: i32,
        syscall: TamperSyscall,
        leader: i32,
        flags: u32,
    ) {
        let mut attempt = event(EventKind::Tamper, attacker, target);
        attempt.syscall = syscall as u32;
        attempt.uid = ALICE;
        attempt.grant = leader as u32;
        attempt.flags = flags;
        self.events(vec![attempt]);
    }

    fn status(&mut self) -> crate::protocol::StatusInfo {
        match self.try_request(GUARDIAN, Request::Status {}, None) {
            Ok(Reply {
                response: Response::Status(status),
                ..
            }) => *status,
            _ => panic!("no status"),
        }
    }

    fn alive(&self, pid: i32) -> bool {
        self.world.lock().procs[&pid].alive
    }

    /// The leader of a new session of `uid` that stored "tok".
    fn storing(&mut self, uid: u32) -> i32 {
        let leader = self.leader(uid);
        self.stored(leader, "tok");
        leader
    }

    /// A session of `uid` holding "tok", with one holder: (leader, holder).
    fn session_holding(&mut self, uid: u32) -> (i32, i32) {
        let leader = self.storing(uid);
        let holder = self.member(leader);
        self.holds(holder, &["tok"]);
        (leader, holder)
    }

    /// `count` execs of "tok" from `leader`'s session.
    fn start_holders(&mut self, leader: i32, count: usize) {
        for _ in 0..count {
            let holder = self.member(leader);
            self.holds(holder, &["tok"]);
        }
    }

    /// Sent SIGKILL, one by one or with its cgroup.
    fn was_killed(&self, pid: i32) -> bool {
        self.world.lock().procs[&pid].killed
    }
}
