//! Who may do what: which processes a secret may be bound to, and which
//! callers may receive a secret (the owner's uid, inside the bound session,
//! not traced).

#![forbid(unsafe_code)]

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
};

use super::{
    Core, RequestError, SecretKey,
    os::{Os, Process},
};
use crate::{
    os::{
        peer::Peer,
        process::{self, Pid, Status, Uid},
    },
    protocol::SecretName,
};

/// How far up a caller's parents a request looks for a tracer.
const MAX_ANCESTORS: usize = 64;

impl<O: Os> Core<O> {
    /// Refuses a leader that never exits, is not a live process of the
    /// caller's (root may bind to anyone's), or is the guardian itself;
    /// returns a handle on it and its uid, the owner of what it is bound to.
    pub(super) fn check_bindable(
        &self,
        peer: &Peer,
        leader: Pid,
    ) -> Result<(O::Process, Uid), RequestError> {
        if leader.raw() == 1 {
            return Err(RequestError::BindInit);
        }
        if leader == self.os.guardian() {
            return Err(RequestError::BindGuardian);
        }
        let inspecting = |err| RequestError::inspecting(leader, err);
        let thread = |tgid: i32| RequestError::Thread { tid: leader, tgid };
        // Open the handle first: checks made after it are about this very
        // process. A thread has no handle of this kind, but it has a status;
        // only a thread of the caller's own user is named as one (another
        // user's process may not be named).
        let process = self
            .os
            .open(leader)
            .map_err(|err| match self.os.status(leader) {
                Ok(status)
                    if status.tgid != leader.raw()
                        && (peer.uid == Uid::ROOT || status.uid == peer.uid) =>
                {
                    thread(status.tgid)
                }
                _ => inspecting(err),
            })?;
        let status = self.os.status(leader).map_err(inspecting)?;
        if status.tgid != leader.raw() {
            return Err(thread(status.tgid));
        }
        if status.kernel_thread {
            return Err(RequestError::KernelThread(leader));
        }
        if peer.uid != Uid::ROOT && status.uid != peer.uid {
            return Err(RequestError::OtherUser(leader));
        }
        if peer.uid != Uid::ROOT && !self.in_session_of(peer, leader) {
            return Err(RequestError::BindOutsideSession(leader));
        }
        if !process.is_alive() {
            return Err(RequestError::Exited(leader));
        }
        Ok((process, status.uid))
    }

    /// True if the peer is in `leader`'s session; a peer in session 0 (a
    /// service, a CI runner), which has no session of its own, may bind to
    /// an ancestor instead. Not to an ancestor from inside a session: every
    /// terminal of a tmux server or `systemd --user` descends from it, and
    /// each could plant a value that all the others' `exec`s would use.
    fn in_session_of(&self, peer: &Peer, leader: Pid) -> bool {
        let sid = |pid| self.os.session_of(pid).ok().flatten();
        match sid(peer.pid) {
            Some(own) => sid(leader) == Some(own),
            None => self.os.descends_from(peer.pid, leader),
        }
    }

    /// The secrets of `names` that the peer may use, after checking once that
    /// the peer is not being traced.
    pub(super) fn usable_all(
        &self,
        peer: &Peer,
        names: &[SecretName],
    ) -> Result<Vec<SecretKey>, RequestError> {
        let peer_sid = self.os.session_of(peer.pid).ok().flatten();
        let keys = names
            .iter()
            .map(|name| self.usable(peer, peer_sid, name))
            .collect::<Result<Vec<_>, _>>()?;
        let parent = self.untraced(peer)?;
        let leaders: HashSet<Pid> = keys
            .iter()
            .filter_map(|key| self.vault.get(key).map(|secret| secret.leader))
            .collect();
        // A get is a handful of /proc reads; none is made twice.
        let statuses = Statuses::new(&self.os);
        for leader in leaders {
            let chain = self.ancestors_in_session(&statuses, parent, leader);
            self.tracers_inside(&statuses, leader, chain)?;
        }
        Ok(keys)
    }

    /// Finds a secret the peer may use: its own, and from inside the bound
    /// session (`peer_sid` is the caller's session, or a descendant of the
    /// leader).
    fn usable(
        &self,
        peer: &Peer,
        peer_sid: Option<Pid>,
        name: &SecretName,
    ) -> Result<SecretKey, RequestError> {
        let key = SecretKey {
            owner: peer.uid,
            name: name.clone(),
        };
        let secret = self
            .vault
            .get(&key)
            .ok_or_else(|| RequestError::NoSuchSecret(name.clone()))?;
        let leader = secret.leader;
        let inside =
            self.sessions.leaders.get(&leader).is_some_and(|l| {
                l.shares_session(peer_sid) || self.os.descends_from(peer.pid, leader)
            });
        if !inside {
            return Err(RequestError::OutsideSession {
                name: name.clone(),
                leader,
            });
        }
        Ok(key)
    }

    /// Refuses a caller that has exited. Facts read by its pid before this
    /// check were about it: its pid cannot be reused while it lives.
    pub(super) fn still_connected(&self, peer: &Peer) -> Result<Status, RequestError> {
        self.os
            .caller_status(peer)
            .map_err(|_| RequestError::CallerExited)
    }

    /// Refuses a caller that is being traced: its tracer could read what it
    /// gets. Also the check that it is [still connected](Self::still_connected).
    /// Returns the caller's parent.
    fn untraced(&self, peer: &Peer) -> Result<Option<Pid>, RequestError> {
        match self.still_connected(peer)? {
            Status {
                tracer: 0, ppid, ..
            } => Ok(Pid::new(ppid)),
            Status { tracer, .. } => Err(RequestError::Traced(tracer)),
        }
    }

    /// Refuses when one of `members` of `leader`'s session is traced by a
    /// process outside that session. A tracer needs no memory access to
    /// harvest: with registers and system calls alone it can make a shell
    /// exec a script that asks for a secret, and the guardian would see an
    /// ordinary request from inside the session.
    pub(super) fn untraced_from_outside(
        &self,
        leader: Pid,
        members: impl IntoIterator<Item = Pid>,
    ) -> Result<(), RequestError> {
        self.tracers_inside(&Statuses::new(&self.os), leader, members)
    }

    /// [`Self::untraced_from_outside`], with statuses read once.
    fn tracers_inside(
        &self,
        statuses: &Statuses<'_, O>,
        leader: Pid,
        members: impl IntoIterator<Item = Pid>,
    ) -> Result<(), RequestError> {
        let sid = self.sessions.leaders.get(&leader).and_then(|l| l.sid);
        for member in members {
            let Some(tracer) = statuses.get(member).and_then(|s| Pid::new(s.tracer)) else {
                continue; // untraced, or gone
            };
            let in_session = |pid| sid.is_some() && self.os.session_of(pid).ok().flatten() == sid;
            if !in_session(tracer) && !statuses.descends_from(tracer, leader) {
                return Err(RequestError::TracedFromOutside {
                    member,
                    tracer,
                    exe: self.os.exe_of(tracer),
                });
            }
        }
        Ok(())
    }

    /// `leader`, and the caller's ancestors from `parent` up while they are
    /// in `leader`'s session: the processes a request from the caller may
    /// have been driven by. (A `put` looks at the whole session.)
    fn ancestors_in_session(
        &self,
        statuses: &Statuses<'_, O>,
        parent: Option<Pid>,
        leader: Pid,
    ) -> Vec<Pid> {
        let sid = self.sessions.leaders.get(&leader).and_then(|l| l.sid);
        let in_session = |pid| {
            (sid.is_some() && self.os.session_of(pid).ok().flatten() == sid)
                || statuses.descends_from(pid, leader)
        };
        let mut chain = vec![leader];
        let mut next = parent;
        // Bounded: a parent chain that changes under the walk ends it.
        for _ in 0..MAX_ANCESTORS {
            let Some(pid) = next.filter(|&pid| pid != leader && in_session(pid)) else {
                break;
            };
            chain.push(pid);
            next = statuses.parent(pid);
        }
        chain
    }
}

/// Processes' statuses as read during one check, each read at most once: the
/// walks up a caller's parents and the tracer checks of its session's
/// members cross the same processes.
struct Statuses<'a, O: Os> {
    os: &'a O,
    read: RefCell<HashMap<Pid, Option<Status>>>,
}

impl<'a, O: Os> Statuses<'a, O> {
    fn new(os: &'a O) -> Self {
        Self {
            os,
            read: RefCell::new(HashMap::new()),
        }
    }

    /// `pid`'s status, or `None` if it is gone.
    fn get(&self, pid: Pid) -> Option<Status> {
        if let Some(status) = self.read.borrow().get(&pid) {
            return status.clone();
        }
        let status = self.os.status(pid).ok();
        self.read.borrow_mut().insert(pid, status.clone());
        status
    }

    fn parent(&self, pid: Pid) -> Option<Pid> {
        self.get(pid).and_then(|status| Pid::new(status.ppid))
    }

    /// True if `ancestor` is `pid` itself or one of its ancestors.
    fn descends_from(&self, pid: Pid, ancestor: Pid) -> bool {
        process::descends_by(pid, ancestor, |pid| self.parent(pid))
    }
}
