//! The audit record of each request, and its durability.

use super::*;
use crate::daemon::state::malformed::MALFORMED_PER_SECOND;

#[test]
fn a_refusal_is_answered_and_audited_with_the_same_words() {
    let mut h = Harness::new();
    let leader = h.storing(ALICE);
    let elsewhere = h.leader(ALICE);
    let reply = h.ask(elsewhere, get_request("tok"), None);
    let Response::Error { message, .. } = reply.response else {
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
    let Response::Error { message, .. } = reply.response else {
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

/// `times` malformed messages from `pid`.
fn malformed(h: &mut Harness, pid: i32, times: u32) {
    for _ in 0..times {
        let peer = Some(h.peer(pid));
        h.send(Msg::Malformed {
            peer,
            reason: "malformed message: expected value".to_owned(),
        });
    }
}

#[test]
fn a_flood_of_malformed_messages_is_recorded_up_to_a_limit_then_summed_up_per_uid() {
    let mut h = Harness::new();
    let (alice, bob) = (h.leader(ALICE), h.leader(BOB));
    malformed(&mut h, alice, 1000);
    malformed(&mut h, bob, 3);
    let one_by_one = |h: &Harness| h.world.lock().records_of("malformed").len() as u32;
    assert_eq!(one_by_one(&h), MALFORMED_PER_SECOND + 3);
    h.advance(Duration::from_secs(1));
    let records = h.world.lock().records_of("malformed");
    let summary = records.last().unwrap();
    assert!(summary["peer"].is_null(), "{summary}");
    let reason = summary["reason"].as_str().unwrap();
    let expected = format!(
        "{} more malformed messages from uid {ALICE}",
        1000 - MALFORMED_PER_SECOND
    );
    assert!(reason.starts_with(&expected), "{reason}");
    assert_eq!(
        records.len() as u32,
        MALFORMED_PER_SECOND + 3 + 1,
        "bob stayed under"
    );
    // A new second starts afresh.
    malformed(&mut h, alice, 1);
    assert_eq!(one_by_one(&h), MALFORMED_PER_SECOND + 5);
}
