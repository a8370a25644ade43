//! `put --replace`: a new value under the old binding and TTL, the old
//! value's holders killed.

use super::*;
use crate::daemon::state::os::Os;

fn replace_request(secret: &str) -> Request {
    match put_request(secret, None, None) {
        Request::Put {
            name,
            bind,
            ttl_secs,
            len,
            ..
        } => Request::Put {
            name,
            bind,
            ttl_secs,
            len,
            replace: true,
        },
        other => other,
    }
}

impl Harness {
    fn replace(&mut self, pid: i32, secret: &str, value: &[u8]) -> Result<Reply, RequestError> {
        self.try_request(pid, replace_request(secret), Some(bytes(value)))
    }
}

#[test]
fn replace_swaps_the_value_keeps_binding_and_ttl_and_kills_old_holders() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    h.stored_for(leader, "tok", 100);
    let old_holder = h.member(leader);
    h.holds(old_holder, &["tok"]);
    h.advance(Duration::from_secs(40));
    let client = h.member(leader);
    let reply = h.ask(client, replace_request("tok"), Some(bytes(b"n3w")));
    assert!(
        matches!(
            reply.response,
            Response::Stored { leader: bound, replaced_holders_killed: Some(1) } if bound == leader
        ),
        "{reply:?}"
    );
    assert!(h.was_killed(old_holder), "the old value's holder lives on");
    assert_eq!(h.get(client, "tok").unwrap(), b"n3w");
    // Same leader, same deadline: 60 s left of the 100.
    let key = SecretKey {
        owner: Uid(ALICE),
        name: name("tok"),
    };
    let secret = h.core.vault.get(&key).unwrap();
    assert_eq!(secret.leader.raw(), leader);
    assert_eq!(
        secret.ttl_left(h.core.os.now()),
        Some(Duration::from_secs(60))
    );
    // A holder of the new value is not the old one's: it lives, and is listed.
    let new_holder = h.member(leader);
    h.holds(new_holder, &["tok"]);
    h.exit(old_holder);
    assert!(!h.was_killed(new_holder));
    // One request record, then the old holders' trigger record.
    let replaced = h.world.lock().records_of("replace");
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0]["outcome"], "allow");
    assert_eq!(h.last_trigger()["reason"], "replace");
    // The leader still wipes it.
    h.exit(leader);
    assert!(!h.holds_secret(ALICE, "tok"));
    assert!(h.was_killed(new_holder));
}

#[test]
fn replace_is_refused_for_a_missing_secret_from_outside_the_session_or_with_a_new_binding() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let inside = h.member(leader);
    let err = h.replace(inside, "absent", b"x").unwrap_err();
    assert!(matches!(err, RequestError::NoSuchSecret(_)), "{err:?}");
    // Another session of the same user would plant a value.
    let other = h.leader(ALICE);
    let outside = h.member(other);
    let err = h.replace(outside, "tok", b"planted").unwrap_err();
    assert!(
        matches!(err, RequestError::OutsideSession { .. }),
        "{err:?}"
    );
    let mut rebind = replace_request("tok");
    if let Request::Put { ttl_secs, .. } = &mut rebind {
        *ttl_secs = Some(Ttl::try_from(5).unwrap());
    }
    let err = h
        .try_request(inside, rebind, Some(bytes(b"x")))
        .unwrap_err();
    assert!(matches!(err, RequestError::ReplaceKeepsBinding), "{err:?}");
    assert_eq!(h.get(inside, "tok").unwrap(), b"s3cret", "the value stands");
}

#[test]
fn list_all_is_roots_view_of_every_user() {
    let mut h = Harness::new();
    let alice = h.storing(ALICE);
    h.storing(BOB);
    let err = h
        .try_request(alice, Request::List { all: true }, None)
        .unwrap_err();
    assert!(matches!(err, RequestError::RootOnly(_)), "{err:?}");
    assert_eq!(err.kind(), crate::protocol::ErrorKind::PermissionDenied);
    let reply = h
        .try_request(GUARDIAN, Request::List { all: true }, None)
        .unwrap();
    let Response::List { secrets } = reply.response else {
        panic!("not a list");
    };
    let owners: Vec<u32> = secrets.iter().map(|s| s.uid).collect();
    assert_eq!(owners, [ALICE, BOB]);
}

#[test]
fn a_holder_may_not_replace_the_value_it_holds() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    // The holder's child, as `put --replace` run under `exec` is.
    let child = h.fork(holder);
    for caller in [holder, child] {
        let err = h.replace(caller, "tok", b"n3w").unwrap_err();
        assert!(matches!(err, RequestError::ReplaceByHolder(_)), "{err:?}");
    }
    assert!(!h.was_killed(holder));
    assert_eq!(h.get(leader, "tok").unwrap(), b"s3cret");
    let outside = h.member(leader);
    assert!(h.replace(outside, "tok", b"n3w").is_ok());
    assert!(h.was_killed(holder));
}
