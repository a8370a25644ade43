//! Lock and suspend as triggers: logind's `Session.Lock` and
//! `Manager.PrepareForSleep(true)` on the D-Bus system bus (systemd-logind,
//! or elogind, which speaks the same interface).
//!
//! The bus delivers a signal sent straight to the guardian (a unicast, with
//! a destination) whoever sent it, so a signal counts only if it was
//! broadcast and came from the connection that owns
//! `org.freedesktop.login1` now: the owner is asked for after subscribing to
//! its changes, so no change is missed. Which watched leader is in which
//! session is asked of logind itself (`GetSessionByPID`) as leaders come.
//!
//! Without a system bus or logind the guardian runs as before; the state
//! machine is told why (for `status`), and the watcher tries again every
//! few seconds, so lock and suspend are watched again once the bus is back.

use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use zbus::{
    Connection, MatchRule, Message, MessageStream, OwnedObjectPath, fdo::DBusProxy, message::Type,
    names::OwnedUniqueName,
};

use super::state::Msg;
use crate::os::{clock, process::Pid};

/// logind's well-known name.
const LOGIN1: &str = "org.freedesktop.login1";
/// How long to wait before connecting again.
const RETRY: Duration = Duration::from_secs(5);

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Manager {
    /// The session `pid` belongs to.
    #[zbus(name = "GetSessionByPID")]
    fn get_session_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;
}

/// Watches logind for as long as the guardian runs, telling `to_core` of
/// locked sessions (by the watched leaders in them, from `leaders`) and of
/// suspends, and whether it is watching at all.
pub async fn watch(to_core: mpsc::UnboundedSender<Msg>, mut leaders: watch::Receiver<Vec<Pid>>) {
    loop {
        let error = match follow(&to_core, &mut leaders).await {
            Ok(()) => "the system bus closed the connection".to_owned(),
            Err(err) => err.to_string(),
        };
        tracing::info!(%error, "screen lock and suspend are not watched; trying again");
        let _ = to_core.send(Msg::LockWatch { error: Some(error) });
        tokio::time::sleep(RETRY).await;
    }
}

/// One connection's worth of watching; returns when the bus goes away.
async fn follow(
    to_core: &mpsc::UnboundedSender<Msg>,
    leaders: &mut watch::Receiver<Vec<Pid>>,
) -> zbus::Result<()> {
    let connection = Connection::system().await?;
    let signals = |rule: MatchRule<'static>| MessageStream::for_match_rule(rule, &connection, None);
    let signal = |sender, interface, member| {
        MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(sender)
            .interface(interface)
            .member(member)
    };
    // Subscribed before the owner is asked for, so no change is missed.
    let mut owner_changes = signals(
        signal(
            "org.freedesktop.DBus",
            "org.freedesktop.DBus",
            "NameOwnerChanged",
        )
        .add_arg(LOGIN1)
        .build()?,
    )
    .await?;
    let mut locks =
        signals(signal(LOGIN1, "org.freedesktop.login1.Session", "Lock").build()?).await?;
    let mut sleeps = signals(
        signal(LOGIN1, "org.freedesktop.login1.Manager", "PrepareForSleep")
            .path("/org/freedesktop/login1")
            .build()?,
    )
    .await?;
    let bus = DBusProxy::new(&connection).await?;
    let mut owner = bus.get_name_owner(LOGIN1.try_into()?).await.ok();
    let manager = ManagerProxy::new(&connection).await?;
    let mut sessions = Sessions::default();
    let current = leaders.borrow_and_update().clone();
    sessions.refresh(&manager, &current).await;
    report(to_core, &owner);
    loop {
        tokio::select! {
            changed = leaders.changed() => {
                if changed.is_err() {
                    return Ok(()); // the guardian is stopping
                }
                let current = leaders.borrow_and_update().clone();
                sessions.refresh(&manager, &current).await;
            }
            Some(Ok(message)) = owner_changes.next() => {
                let (_, _, new): (String, String, String) = message.body().deserialize()?;
                owner = OwnedUniqueName::try_from(new).ok();
                // A new logind numbers its sessions anew.
                sessions = Sessions::default();
                let current = leaders.borrow().clone();
                sessions.refresh(&manager, &current).await;
                report(to_core, &owner);
            }
            Some(Ok(message)) = locks.next() => {
                if !from_owner(&message, &owner) {
                    continue;
                }
                let at_ns = clock::now_ns();
                let Some(path) = message.header().path().map(|path| path.to_string()) else {
                    continue;
                };
                let locked = sessions.leaders_in(&path);
                tracing::info!(%path, ?locked, "logind locked a session");
                let _ = to_core.send(Msg::SessionLocked { leaders: locked, at_ns });
            }
            Some(Ok(message)) = sleeps.next() => {
                let at_ns = clock::now_ns();
                let starting: bool = message.body().deserialize()?;
                if starting && from_owner(&message, &owner) {
                    tracing::info!("logind is suspending the machine");
                    let _ = to_core.send(Msg::Suspending { at_ns });
                }
            }
            else => return Ok(()),
        }
    }
}

/// True for a signal logind broadcast: sent by the current owner of its
/// name, to no one in particular. A look-alike from another connection, or
/// one sent to the guardian alone, is not.
fn from_owner(message: &Message, owner: &Option<OwnedUniqueName>) -> bool {
    let header = message.header();
    let sender = header.sender().map(|sender| sender.as_str());
    header.destination().is_none()
        && sender.is_some()
        && sender == owner.as_ref().map(|owner| owner.as_str())
}

/// Tells the state machine whether lock and suspend are watched.
fn report(to_core: &mpsc::UnboundedSender<Msg>, owner: &Option<OwnedUniqueName>) {
    let error = match owner {
        Some(owner) => {
            tracing::info!(%owner, "watching logind for screen lock and suspend");
            None
        }
        None => Some(format!("no {LOGIN1} on the system bus (no logind)")),
    };
    let _ = to_core.send(Msg::LockWatch { error });
}

/// Which watched leader is in which logind session (`None`: in none).
#[derive(Default)]
struct Sessions(HashMap<Pid, Option<String>>);

impl Sessions {
    /// Asks logind about leaders it has not been asked about, and forgets
    /// those no longer watched.
    async fn refresh(&mut self, manager: &ManagerProxy<'_>, leaders: &[Pid]) {
        self.0.retain(|leader, _| leaders.contains(leader));
        for &leader in leaders {
            if self.0.contains_key(&leader) {
                continue;
            }
            let session = manager
                .get_session_by_pid(leader.raw() as u32)
                .await
                .ok()
                .map(|path| path.to_string());
            self.0.insert(leader, session);
        }
    }

    /// The watched leaders in the session at `path`.
    fn leaders_in(&self, path: &str) -> Vec<Pid> {
        self.0
            .iter()
            .filter(|(_, session)| session.as_deref() == Some(path))
            .map(|(&leader, _)| leader)
            .collect()
    }
}
