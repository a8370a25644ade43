//! Secrets delivered as files (`exec --file`): one per secret asked for as
//! a file, guarded for its grant, zeroed before the grant's holders die,
//! forgotten with the grant; an open from outside the grant is a tamper.

use super::*;
use crate::{daemon::state::sessions::GrantId, protocol::Delivery};

fn exec_with(secrets: &[&str], delivery: &[Delivery]) -> Request {
    let Request::Exec { names, .. } = exec_request(secrets) else {
        unreachable!("exec_request makes an exec");
    };
    Request::Exec {
        names,
        delivery: delivery.to_vec(),
    }
}

/// Where in the effects the first of each kind is.
fn first(h: &Harness, wanted: fn(&Effect) -> bool) -> Option<usize> {
    h.world.lock().effects.iter().position(wanted)
}

#[test]
fn a_file_is_made_for_the_grant_and_zeroed_before_its_holders_die() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    h.stored(leader, "db");
    let holder = h.member(leader);
    let request = exec_with(&["tok", "db"], &[Delivery::File, Delivery::Both]);
    let reply = h.try_request(holder, request, None).unwrap();
    assert_eq!(
        reply.files.len(),
        2,
        "a file for each secret asked for as one"
    );
    assert_eq!(
        reply.secrets.len(),
        1,
        "bytes only for the one asked for as both"
    );
    assert!(matches!(reply.response, Response::Secrets { files: 2, .. }));
    let grant = h.world.lock().kernel.holders[&holder].0;
    let guarded: Vec<GrantId> = h
        .world
        .lock()
        .kernel
        .secret_files
        .values()
        .copied()
        .collect();
    assert_eq!(guarded, [grant, grant]);
    drop(reply);
    h.exit(leader);
    let wiped = first(&h, |e| matches!(e, Effect::WipeFile { .. })).expect("no file wiped");
    let killed = first(&h, |e| matches!(e, Effect::CgroupKill { .. })).expect("no kill");
    assert!(
        wiped < killed,
        "the holders were killed before their files were wiped"
    );
    h.exit(holder);
    h.settle();
    assert!(
        h.world.lock().kernel.secret_files.is_empty(),
        "kept after the grant"
    );
}

#[test]
fn an_open_from_outside_the_grant_is_a_tamper_that_wipes_its_secrets() {
    let mut h = Harness::new();
    let (leader, holder) = h.session_holding(ALICE);
    let request = exec_with(&["tok"], &[Delivery::File]);
    h.try_request(holder, request, None).unwrap();
    let grant = h.world.lock().kernel.holders[&holder].0;
    let outsider = h.member(leader);
    let mut attempt = h.event(EventKind::Tamper, outsider, 0);
    attempt.syscall = TamperSyscall::OpenSecretFile as u32;
    attempt.request = u64::from(grant);
    attempt.uid = ALICE;
    h.events(vec![attempt]);
    assert!(
        !h.holds_secret(ALICE, "tok"),
        "the secret outlived the attempt"
    );
    let record = h.world.lock().records_of("tamper").pop().unwrap();
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("secret file of grant"),
        "{record}"
    );
}

#[test]
fn a_delivery_for_each_name_or_none() {
    let mut h = Harness::new();
    let (_, holder) = h.session_holding(ALICE);
    let request = exec_with(&["tok"], &[Delivery::File, Delivery::Env]);
    let err = h.try_request(holder, request, None).unwrap_err();
    assert!(matches!(err, RequestError::Delivery { .. }), "{err:?}");
}
