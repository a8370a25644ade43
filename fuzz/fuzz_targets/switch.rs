//! The state machine driven by any sequence of requests, process events,
//! kernel events, clock moves and failures, against the fake operating
//! system. Besides "never panics", it checks after every step that:
//! - a secret that left the vault (wiped, or replaced by `put --replace`)
//!   never comes back, in the vault or a reply;
//! - a reply carries only the caller's own secrets, under the names asked;
//! - `list` shows exactly the caller's own names.

#![no_main]

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use arbitrary::Arbitrary;
use guardian::{
    config::{Config, TamperResponse},
    daemon::state::{
        Msg,
        fake::{Harness, Parts},
    },
    os::{
        process::{Pid, Uid},
        secret_mem::SecretBuf,
    },
    protocol::{Delivery, ExecNames, Request, Response, SecretName, Ttl},
};
use guardian_ebpf::{EventKind, TamperSyscall};
use libfuzzer_sys::fuzz_target;

const UIDS: [u32; 3] = [0, 1000, 1001];
/// PIDs a `--bind` may name besides the processes made: init, the
/// guardian, the supervisor, and one that never existed.
const ODD_PIDS: [i32; 4] = [1, 900, 901, 99_999];

#[derive(Arbitrary, Debug)]
struct Script {
    kernel: bool,
    cgroups: bool,
    supervisor: bool,
    audit_only: bool,
    ops: Vec<Op>,
}

/// A `put` (or `put --replace`) of a tagged value.
#[derive(Arbitrary, Debug)]
struct PutOp {
    by: u8,
    name: u8,
    bind: Option<u8>,
    ttl: Option<u16>,
    size: u8,
    replace: bool,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Leader {
        uid: u8,
    },
    Member {
        of: u8,
    },
    Spawn {
        uid: u8,
        parent: u8,
        session_zero: bool,
    },
    Put(PutOp),
    Get {
        by: u8,
        name: u8,
    },
    Exec {
        by: u8,
        names: Vec<u8>,
        /// Per name: 0 as bytes, 1 as a file, 2 both (`exec --file`).
        files: Vec<u8>,
    },
    List {
        by: u8,
    },
    /// logind locks the session of these leaders.
    Lock {
        leaders: Vec<u8>,
    },
    /// logind says the machine is about to sleep.
    Suspend,
    Revoke {
        by: u8,
        name: u8,
    },
    WipeAll {
        by: u8,
    },
    Status {
        by: u8,
    },
    Exit {
        who: u8,
    },
    Fork {
        who: u8,
    },
    Hangup {
        who: u8,
    },
    Tamper {
        attacker: u8,
        target: u8,
    },
    Trace {
        who: u8,
        tracer: u16,
    },
    Unkillable {
        who: u8,
    },
    LoseEvents,
    Advance {
        centis: u16,
    },
    Settle,
    FailAudit(bool),
    FailCommit(bool),
}

/// The fuzzer's own record of what it stored.
struct Model {
    h: Harness,
    pids: Vec<i32>,
    /// Tag of each stored secret -> (owner, name).
    tags: HashMap<u32, (Uid, String)>,
    next_tag: u32,
    /// Tags that have left the vault.
    gone: HashSet<u32>,
    seen: HashSet<u32>,
}

impl Model {
    fn pid(&self, index: u8) -> i32 {
        self.pids[usize::from(index) % self.pids.len()]
    }

    fn uid_of(&self, pid: i32) -> Uid {
        self.h.world.lock().procs[&pid].uid
    }

    fn name(index: u8) -> SecretName {
        format!("n{}", index % 4).parse().expect("a valid name")
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Leader { uid } => {
                let pid = self.h.leader(UIDS[usize::from(uid) % 3]);
                self.pids.push(pid);
            }
            Op::Member { of } => {
                let pid = self.h.member(self.pid(of));
                self.pids.push(pid);
            }
            Op::Spawn {
                uid,
                parent,
                session_zero,
            } => {
                let sid = if session_zero { 0 } else { -1 };
                let pid = self
                    .h
                    .spawn(UIDS[usize::from(uid) % 3], self.pid(parent), sid);
                self.pids.push(pid);
            }
            Op::Put(op) => self.put(op),
            Op::Get { by, name } => {
                let by = self.pid(by);
                let request = Request::Get {
                    name: Self::name(name),
                };
                self.ask(by, request, &[Self::name(name)]);
            }
            Op::Exec { by, names, files } => {
                let mut unique: Vec<SecretName> = Vec::new();
                for name in names.iter().take(6).map(|&n| Self::name(n)) {
                    if !unique.contains(&name) {
                        unique.push(name);
                    }
                }
                let Ok(asked) = ExecNames::try_from(unique.clone()) else {
                    return;
                };
                let delivery: Vec<Delivery> = (0..unique.len())
                    .map(|at| match files.get(at).map(|how| how % 3) {
                        Some(1) => Delivery::File,
                        Some(2) => Delivery::Both,
                        _ => Delivery::Env,
                    })
                    .collect();
                let as_bytes: Vec<SecretName> = unique
                    .iter()
                    .zip(&delivery)
                    .filter(|&(_, how)| how.as_bytes())
                    .map(|(name, _)| name.clone())
                    .collect();
                let by = self.pid(by);
                let request = Request::Exec {
                    names: asked,
                    delivery,
                };
                self.ask(by, request, &as_bytes);
            }
            Op::Lock { leaders } => {
                let leaders = leaders
                    .iter()
                    .filter_map(|&at| Pid::new(self.pid(at)))
                    .collect();
                self.h.send(Msg::SessionLocked { leaders, at_ns: 0 });
            }
            Op::Suspend => _ = self.h.send(Msg::Suspending { at_ns: 0 }),
            Op::List { by } => {
                let by = self.pid(by);
                let reply = self.h.ask(by, Request::List { all: false }, None);
                if let Response::List { secrets } = reply.response {
                    let uid = self.uid_of(by);
                    let mut shown: Vec<String> = secrets.into_iter().map(|s| s.name).collect();
                    let mut own: Vec<String> = self
                        .h
                        .vault_contents()
                        .into_iter()
                        .filter(|(owner, _, _)| *owner == uid)
                        .map(|(_, name, _)| name)
                        .collect();
                    shown.sort();
                    own.sort();
                    assert_eq!(shown, own, "list shows exactly the caller's names");
                }
            }
            Op::Revoke { by, name } => {
                let by = self.pid(by);
                self.h.ask(
                    by,
                    Request::Revoke {
                        name: Self::name(name),
                    },
                    None,
                );
            }
            Op::WipeAll { by } => {
                let by = self.pid(by);
                self.h.ask(by, Request::WipeAll {}, None);
            }
            Op::Status { by } => {
                let by = self.pid(by);
                self.h.ask(by, Request::Status {}, None);
            }
            Op::Exit { who } => self.h.exit(self.pid(who)),
            Op::Fork { who } => {
                let parent = self.pid(who);
                if self.h.world.lock().procs[&parent].alive {
                    let child = self.h.fork(parent);
                    self.pids.push(child);
                }
            }
            Op::Hangup { who } => {
                let event = self.h.event(EventKind::LeaderHangup, self.pid(who), 0);
                self.h.events(vec![event]);
            }
            Op::Tamper { attacker, target } => {
                let mut event =
                    self.h
                        .event(EventKind::Tamper, self.pid(attacker), self.pid(target));
                event.syscall = TamperSyscall::Ptrace as u32;
                self.h.events(vec![event]);
            }
            Op::Trace { who, tracer } => {
                let who = self.pid(who);
                if let Some(proc) = self.h.world.lock().procs.get_mut(&who) {
                    proc.tracer = i32::from(tracer);
                }
            }
            Op::Unkillable { who } => {
                let who = self.pid(who);
                if let Some(proc) = self.h.world.lock().procs.get_mut(&who) {
                    proc.unkillable = true;
                }
            }
            Op::LoseEvents => {
                self.h.world.lock().kernel.dropped += 1;
                self.h.events(Vec::new());
            }
            Op::Advance { centis } => {
                self.h
                    .advance(Duration::from_millis(u64::from(centis) * 10));
            }
            Op::Settle => self.h.settle(),
            Op::FailAudit(fail) => self.h.world.lock().fail_audit_write = fail,
            Op::FailCommit(fail) => self.h.world.lock().fail_commit = fail,
        }
        self.check_vault();
    }

    fn put(
        &mut self,
        PutOp {
            by,
            name,
            bind,
            ttl,
            size,
            replace,
        }: PutOp,
    ) {
        let by = self.pid(by);
        let bind = bind.map(|index| match usize::from(index) % 8 {
            odd @ 0..4 => ODD_PIDS[odd],
            _ => self.pid(index),
        });
        self.next_tag += 1;
        let tag = self.next_tag;
        let len = 4 + usize::from(size % 60);
        let mut payload = SecretBuf::new(len).expect("locked memory");
        for (byte, tag_byte) in payload
            .as_mut_slice()
            .iter_mut()
            .zip(tag.to_le_bytes().iter().cycle())
        {
            *byte = *tag_byte;
        }
        let request = Request::Put {
            name: Self::name(name),
            bind: bind.and_then(Pid::new),
            ttl_secs: ttl.and_then(|secs| Ttl::try_from(u64::from(secs)).ok()),
            len,
            replace,
        };
        let reply = self.h.ask(by, request, Some(payload));
        if matches!(reply.response, Response::Stored { .. }) {
            let owner = self.uid_of(by);
            self.tags.insert(tag, (owner, Self::name(name).to_string()));
        }
    }

    /// Sends a get or exec and checks every secret in the reply.
    fn ask(&mut self, by: i32, request: Request, names: &[SecretName]) {
        let uid = self.uid_of(by);
        let reply = self.h.ask(by, request, None);
        if !reply.secrets.is_empty() {
            assert_eq!(reply.secrets.len(), names.len(), "one secret per name");
        }
        for (secret, name) in reply.secrets.iter().zip(names) {
            let tag = tag_of(secret.as_slice());
            assert!(!self.gone.contains(&tag), "a wiped secret was handed out");
            let (owner, stored_as) = &self.tags[&tag];
            assert_eq!(*owner, uid, "another user's secret was handed out");
            assert_eq!(
                stored_as,
                &name.to_string(),
                "the wrong secret for the name"
            );
        }
    }

    /// A tag that has left the vault never comes back.
    fn check_vault(&mut self) {
        let now: HashSet<u32> = self
            .h
            .vault_contents()
            .iter()
            .map(|(_, _, bytes)| tag_of(bytes))
            .collect();
        assert!(
            now.is_disjoint(&self.gone),
            "a wiped secret is back in the vault"
        );
        self.gone.extend(self.seen.difference(&now).copied());
        self.seen = now;
    }
}

fn tag_of(bytes: &[u8]) -> u32 {
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(tag)
}

fuzz_target!(|script: Script| {
    let parts = Parts {
        kernel: script.kernel,
        cgroups: script.cgroups,
        supervisor: script.supervisor,
    };
    let config = Config {
        tamper_response: match script.audit_only {
            true => TamperResponse::Audit,
            false => TamperResponse::Wipe,
        },
        max_secrets_per_uid: 3,
        max_locked_bytes_per_uid: 4096,
        max_secret_bytes: 64,
        ..Config::default()
    };
    let mut h = Harness::with(parts, config);
    let pids = vec![h.leader(1000), h.leader(1001)];
    let mut model = Model {
        h,
        pids,
        tags: HashMap::new(),
        next_tag: 0,
        gone: HashSet::new(),
        seen: HashSet::new(),
    };
    for op in script.ops.into_iter().take(64) {
        model.step(op);
    }
});
