//! The audit record of each request, and its durability.

use super::*;

#[test]
fn a_refusal_is_answered_and_audited_with_the_same_words() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let elsewhere = h.leader(ALICE);
    let reply = h.ask(elsewhere, get_request("tok"), None);
    let Response::Error { message } = reply.response else {
        panic!("answered {:?}", reply.response);
    };
    let record = h.world.lock().records_of("get").pop().unwrap();
    assert_eq!(record["outcome"], "deny");
    assert_eq!(record["reason"], message.as_str());
    assert_eq!(record["leader"], leader);
    assert_eq!(record["peer"]["pid"], elsewhere);
}

#[test]
fn a_put_whose_record_cannot_be_written_is_refused_and_not_stored() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    h.world.lock().fail_audit_write = true;
    let reply = h.ask(
        leader,
        put_request("tok", None, None),
        Some(bytes(b"s3cret")),
    );
    let Response::Error { message } = reply.response else {
        panic!("answered {:?}", reply.response);
    };
    assert!(message.ends_with("put refused"), "{message}");
    assert!(h.core.vault.is_empty());
}

#[test]
fn a_put_whose_record_cannot_be_synced_is_undone_while_revoke_still_answers() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    h.stored(leader, "kept");
    h.world.lock().fail_commit = true;
    let reply = h.ask(
        leader,
        put_request("tok", None, None),
        Some(bytes(b"s3cret")),
    );
    assert!(matches!(reply.response, Response::Error { .. }));
    assert!(!h.holds_secret(ALICE, "tok"), "undone");
    let reply = h.ask(leader, Request::Revoke { name: name("kept") }, None);
    assert!(matches!(reply.response, Response::Revoked { .. }));
}

#[test]
fn a_malformed_message_is_audited() {
    let mut h = Harness::new();
    let leader = h.leader(ALICE);
    let peer = Some(h.peer(leader));
    h.send(Msg::Malformed {
        peer,
        reason: "malformed message: expected value".to_owned(),
    });
    let record = h.world.lock().records_of("malformed").pop().unwrap();
    assert_eq!(record["outcome"], "deny");
    assert_eq!(record["reason"], "malformed message: expected value");
}
