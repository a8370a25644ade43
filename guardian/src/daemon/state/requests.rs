//! Requests: put, get, exec, list, revoke, wipe and status, each audited.
//! Nothing enters or leaves the vault that the log does not show: put, get
//! and exec carry what undoes them if their record cannot be made durable.

#![forbid(unsafe_code)]

use super::{
    Core, Payload, Reply, RequestError, SecretKey,
    os::{KernelMaps, Os},
    triggers::Cause,
    vault::Secret,
};
use crate::{
    audit::{
        Action, Entry, Outcome,
        commit::{Refusal, Unsynced},
    },
    config::TtlTooLong,
    os::{
        peer::Peer,
        process::{Pid, Uid},
        secret_mem::SecretBuf,
    },
    protocol::{
        Delivery, ExecNames, MAX_REPLY_BYTES, MAX_TTL, Request, Response, SecretInfo, SecretName,
        Ttl,
    },
};

type Answer = Result<Reply, RequestError>;

impl<O: Os> Core<O> {
    /// Carries out one request and writes its audit record (durable at the
    /// next commit). Returns the answer and, for put/get/exec, how to refuse
    /// it instead should the record not reach the disk.
    pub(super) fn request(
        &mut self,
        peer: &Peer,
        request: Request,
        payload: Option<Payload>,
    ) -> (Reply, Option<Refusal>) {
        let action = action_of(&request);
        let names = names_of(&request);
        let leader = names.first().and_then(|name| self.leader_of(peer, name));
        let result = self.carry_out(peer, request, payload);
        let (outcome, reason, leader) = match &result {
            Ok(reply) => match reply.response {
                Response::Stored { leader, .. } => (Outcome::Allow, None, Some(leader)),
                _ => (Outcome::Allow, None, leader),
            },
            Err(err) => (Outcome::Deny, Some(err.to_string()), leader),
        };
        let entry = Entry {
            action,
            names: names.iter().map(ToString::to_string).collect(),
            peer: Some(peer.clone()),
            leader,
            outcome,
            reason,
            latency: None,
        };
        // Revoke, wipe, list and status still answer without a record: they
        // only destroy or describe.
        let stored = (action.stores() && result.is_ok())
            .then(|| names.first())
            .flatten();
        let refusal = action.needs_its_record().then(|| Refusal {
            action,
            undo: stored.map(|name| SecretKey {
                owner: peer.uid,
                name: name.clone(),
            }),
        });
        let answer = result.unwrap_or_else(|err| Reply::refused(&err));
        match (self.os.audit_write(&entry), refusal) {
            (Err(err), Some(refusal)) => (self.refuse(refusal, err), None),
            (Err(err), None) => {
                tracing::error!(%err, %action, "cannot write the audit log");
                (answer, None)
            }
            (Ok(()), refusal) => (answer, refusal),
        }
    }

    pub(super) fn carry_out(
        &mut self,
        peer: &Peer,
        request: Request,
        payload: Option<Payload>,
    ) -> Answer {
        match request {
            Request::Put {
                name,
                bind,
                ttl_secs,
                replace,
                ..
            } => {
                let payload = payload.ok_or(RequestError::MissingPayload)?;
                match replace {
                    false => self.put(peer, name, bind, ttl_secs, payload),
                    true if bind.is_some() || ttl_secs.is_some() => {
                        Err(RequestError::ReplaceKeepsBinding)
                    }
                    true => self.replace(peer, name, payload),
                }
            }
            Request::Get { name } => self.get(peer, &name),
            Request::Exec { names, delivery } => self.exec(peer, &names, &delivery),
            Request::List { all } => self.list(peer, all),
            Request::Revoke { name } => self.revoke(peer, name),
            Request::WipeAll {} => Ok(self.wipe_all(peer)),
            Request::Status {} => Ok(Reply::plain(Response::Status(Box::new(
                self.status(peer.uid),
            )))),
        }
    }

    /// Answers a batch whose records could not be made durable: put/get/exec
    /// are refused (puts undone), the rest answered as they were.
    pub(super) fn sync_failed(&mut self, batch: Vec<Unsynced>, err: &std::io::Error) {
        for unsynced in batch {
            let answer = match unsynced.refusal {
                Some(refusal) => {
                    self.refuse(refusal, std::io::Error::new(err.kind(), err.to_string()))
                }
                None => unsynced.answer,
            };
            let _ = unsynced.reply_to.send(answer);
        }
    }

    /// Undoes what a request did when its record cannot reach the disk.
    fn refuse(&mut self, refusal: Refusal, source: std::io::Error) -> Reply {
        tracing::error!(err = %source, "cannot write the audit log");
        if let Some(key) = refusal.undo {
            // A trigger, not a bare wipe: an exec may have handed it out since.
            self.trigger(Cause::AuditUnavailable, self.os.now_ns(), vec![key], None);
        }
        Reply::refused(&RequestError::AuditUnavailable {
            action: refusal.action,
            source,
        })
    }

    /// The leader of the caller's secret `name`, for the audit record.
    fn leader_of(&self, peer: &Peer, name: &SecretName) -> Option<i32> {
        let key = SecretKey {
            owner: peer.uid,
            name: name.clone(),
        };
        self.vault.get(&key).map(|secret| secret.leader.raw())
    }

    fn put(
        &mut self,
        peer: &Peer,
        name: SecretName,
        bind: Option<Pid>,
        ttl: Option<Ttl>,
        Payload { bytes, charge }: Payload,
    ) -> Answer {
        let key = SecretKey {
            owner: peer.uid,
            name,
        };
        if self.vault.get(&key).is_some() {
            return Err(RequestError::Exists(key.name));
        }
        self.check_size(&bytes)?;
        if self.vault.owned_by(peer.uid).count() >= self.config.max_secrets_per_uid {
            return Err(RequestError::TooManySecrets {
                limit: self.config.max_secrets_per_uid,
            });
        }
        let ttl = self.config.ttl_for(ttl.map(Ttl::duration))?;
        let now = self.os.now();
        let expires = match ttl {
            Some(ttl) => Some((
                ttl,
                now.checked_add(ttl).ok_or(TtlTooLong {
                    asked: ttl,
                    max: MAX_TTL,
                })?,
            )),
            None => None,
        };
        // Armed before the secret is stored: no secret is ever held unguarded.
        if let Some(kernel) = &mut self.kernel {
            kernel.arm().map_err(RequestError::Arm)?;
        }
        let leader = match bind {
            // As the caller sees it, in its own pid namespace.
            Some(pid) => self
                .os
                .global_pid(peer.pid, pid)
                .map_err(|err| RequestError::inspecting(pid, err))?
                .ok_or(RequestError::NoSuchProcess(pid))?,
            None => {
                let leader = self
                    .os
                    .session_of(peer.pid)
                    .map_err(RequestError::CallerSession)?
                    .ok_or(RequestError::NoSession)?;
                // A put that leads its own session (`setsid ningen-shikkaku
                // put`) exits once the secret is stored, wiping it at once. A
                // process that names itself with `bind` means to live on.
                if leader == peer.pid {
                    return Err(RequestError::BindCaller(leader));
                }
                leader
            }
        };
        let (process, owner) = self.check_bindable(peer, leader)?;
        // The caller's session was read by pid: make sure it was the caller's.
        self.still_connected(peer)?;
        let fresh = self.watch_leader(leader, process, owner)?;
        // Looked at once its members are wards: a tracer attached from now
        // on is stopped by the kernel, one attached before is seen here.
        let sid = self.sessions.leaders.get(&leader).and_then(|l| l.sid);
        let members = self.os.session_members(leader, sid);
        if let Err(err) = self.untraced_from_outside(leader, members.iter().copied()) {
            if fresh {
                self.unwatch_leader(leader);
            }
            return Err(err);
        }
        let id = self.fresh_id();
        let expiry = expires.map(|(ttl, at)| {
            let expired = super::Msg::Expired {
                key: key.clone(),
                id,
            };
            (at, self.os.after(ttl, expired))
        });
        let secret = Secret {
            id,
            bytes,
            charge,
            leader,
            created: now,
            expiry,
        };
        self.vault.insert(key.clone(), secret);
        self.check_environs(&members, &key);
        Ok(Reply::plain(Response::Stored {
            leader: leader.raw(),
            replaced_holders_killed: None,
        }))
    }

    /// `put --replace`: new bytes under the secret's binding and TTL, asked
    /// from inside its session like a `get` (from outside, it would plant a
    /// value there). The old value is wiped and its holders killed, so no
    /// process goes on with it.
    fn replace(
        &mut self,
        peer: &Peer,
        name: SecretName,
        Payload { bytes, charge }: Payload,
    ) -> Answer {
        self.check_size(&bytes)?;
        let key = self
            .usable_all(peer, std::slice::from_ref(&name))?
            .pop()
            .ok_or(RequestError::NoSuchSecret(name))?;
        // It would be killed with the old value's holders, before it heard
        // whether the new one was stored.
        if self.holds_value_of(peer, &key) {
            return Err(RequestError::ReplaceByHolder(key.name));
        }
        self.still_connected(peer)?;
        let start_ns = self.os.now_ns();
        self.retire(&key);
        let Some(leader) = self.vault.replace(&key, bytes, charge, self.os.now()) else {
            return Err(RequestError::NoSuchSecret(key.name));
        };
        let killed = self.kill_holders(
            Cause::Replace,
            start_ns,
            std::slice::from_ref(&key),
            Vec::new(),
            None,
        );
        let sid = self.sessions.leaders.get(&leader).and_then(|l| l.sid);
        let members = self.os.session_members(leader, sid);
        self.check_environs(&members, &key);
        Ok(Reply::plain(Response::Stored {
            leader: leader.raw(),
            replaced_holders_killed: Some(killed),
        }))
    }

    fn check_size(&self, bytes: &SecretBuf) -> Result<(), RequestError> {
        if bytes.len() > self.config.max_secret_bytes {
            return Err(RequestError::TooLarge {
                limit: self.config.max_secret_bytes,
            });
        }
        Ok(())
    }

    /// A reply with copies of the secrets under `keys`, within the reply
    /// limit and charged to the caller's budget.
    fn copies(&self, peer: &Peer, keys: &[SecretKey]) -> Answer {
        let secrets = keys
            .iter()
            .map(|key| {
                self.vault
                    .get(key)
                    .ok_or_else(|| RequestError::NoSuchSecret(key.name.clone()))
            })
            .collect::<Result<Vec<&Secret>, _>>()?;
        let bytes = secrets
            .iter()
            .map(|secret| secret.bytes.len())
            .fold(0, usize::saturating_add);
        if bytes > MAX_REPLY_BYTES {
            return Err(RequestError::ReplyTooLarge {
                bytes,
                limit: MAX_REPLY_BYTES,
            });
        }
        let charge = self.budget.charge(peer.uid, bytes)?;
        let copies = secrets
            .iter()
            .map(|secret| secret.bytes.try_clone())
            .collect::<Result<Vec<_>, _>>()?;
        let lens = copies.iter().map(SecretBuf::len).collect();
        Ok(Reply {
            response: Response::Secrets { lens, files: 0 },
            secrets: copies,
            charge: Some(charge),
            files: Vec::new(),
        })
    }

    fn get(&mut self, peer: &Peer, name: &SecretName) -> Answer {
        let keys = self.usable_all(peer, std::slice::from_ref(name))?;
        self.copies(peer, &keys)
    }

    /// Copies of the secrets asked for as bytes, and files of those asked
    /// for as files; the caller becomes their holder.
    fn exec(&mut self, peer: &Peer, names: &ExecNames, delivery: &[Delivery]) -> Answer {
        let keys = self.usable_all(peer, names.as_slice())?;
        if !delivery.is_empty() && delivery.len() != keys.len() {
            return Err(RequestError::Delivery {
                names: keys.len(),
                delivery: delivery.len(),
            });
        }
        let how = |index: usize| delivery.get(index).copied().unwrap_or_default();
        let chosen = |wanted: fn(Delivery) -> bool| -> Vec<SecretKey> {
            keys.iter()
                .enumerate()
                .filter(|&(index, _)| wanted(how(index)))
                .map(|(_, key)| key.clone())
                .collect()
        };
        let mut reply = self.copies(peer, &chosen(Delivery::as_bytes))?;
        let (files, handles) = self.make_files(peer, &chosen(Delivery::as_file))?;
        let grant = self.add_holder(peer, keys)?;
        self.give_files(grant, files)?;
        if let Response::Secrets { files, .. } = &mut reply.response {
            *files = handles.len();
        }
        reply.files = handles;
        Ok(reply)
    }

    /// The caller's secrets; with `all`, root's view of everyone's.
    fn list(&self, peer: &Peer, all: bool) -> Answer {
        if all && peer.uid != Uid::ROOT {
            return Err(RequestError::RootOnly("list --all"));
        }
        let now = self.os.now();
        let mut secrets: Vec<SecretInfo> = self
            .vault
            .iter()
            .filter(|(key, _)| all || key.owner == peer.uid)
            .map(|(key, secret)| {
                let holders = self.sessions.holders_of(key);
                SecretInfo {
                    name: key.name.to_string(),
                    uid: key.owner.0,
                    leader: secret.leader.raw(),
                    holders: holders.len(),
                    holder_pids: holders.iter().map(|pid| pid.raw()).collect(),
                    age_secs: now.saturating_duration_since(secret.created).as_secs(),
                    ttl_left_secs: secret.ttl_left(now).map(|left| left.as_secs()),
                }
            })
            .collect();
        secrets.sort_by(|a, b| (a.uid, &a.name).cmp(&(b.uid, &b.name)));
        Ok(Reply::plain(Response::List { secrets }))
    }

    fn revoke(&mut self, peer: &Peer, name: SecretName) -> Answer {
        let key = SecretKey {
            owner: peer.uid,
            name,
        };
        if self.vault.get(&key).is_none() {
            return Err(RequestError::NoSuchSecret(key.name));
        }
        let killed = self.trigger(Cause::Revoke, self.os.now_ns(), vec![key], None);
        Ok(Reply::plain(Response::Revoked {
            holders_killed: killed,
        }))
    }

    fn wipe_all(&mut self, peer: &Peer) -> Reply {
        let keys: Vec<SecretKey> = match peer.uid {
            Uid::ROOT => self.vault.keys(),
            uid => self
                .vault
                .owned_by(uid)
                .map(|(key, _)| key.clone())
                .collect(),
        };
        let secrets = keys.len();
        let holders_killed = self.trigger(Cause::WipeAll, self.os.now_ns(), keys, None);
        Reply::plain(Response::Wiped {
            secrets,
            holders_killed,
        })
    }
}

/// The verb of `request`, as the audit log records it.
fn action_of(request: &Request) -> Action {
    match request {
        Request::Put { replace: false, .. } => Action::Put,
        Request::Put { replace: true, .. } => Action::Replace,
        Request::Get { .. } => Action::Get,
        Request::Exec { .. } => Action::Exec,
        Request::List { .. } => Action::List,
        Request::Revoke { .. } => Action::Revoke,
        Request::WipeAll {} => Action::WipeAll,
        Request::Status {} => Action::Status,
    }
}

fn names_of(request: &Request) -> Vec<SecretName> {
    match request {
        Request::Put { name, .. } | Request::Get { name } | Request::Revoke { name } => {
            vec![name.clone()]
        }
        Request::Exec { names, .. } => names.as_slice().to_vec(),
        Request::List { .. } | Request::Status {} | Request::WipeAll {} => Vec::new(),
    }
}
