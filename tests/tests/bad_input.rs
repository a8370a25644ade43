//! Garbage, truncated and oversized messages on the socket: each gets an error
//! or a closed connection, the guardian stays up and every secret survives.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use e2e::{Guardian, Session};

/// Sends `bytes` (ignoring a reset once the guardian gives up on us), then
/// reads whatever comes back until the guardian closes the connection.
fn send(guardian: &Guardian, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(&guardian.socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

fn frame(json: &str) -> Vec<u8> {
    let mut bytes = (json.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

fn reply_message(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply.get(4..).unwrap_or_default()).into_owned()
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn malformed_messages_are_refused_and_nothing_else_is_disturbed() {
    let guardian = Guardian::start("badinput");
    let mut session = Session::start(&guardian);
    let (rc, _, err) = session.run("printf %s keepme | $NS put keep");
    assert_eq!(rc, 0, "{err}");
    let sixteen_mib = 16usize << 20;

    let mut oversized_frame = (sixteen_mib as u32).to_le_bytes().to_vec();
    oversized_frame.extend(std::iter::repeat_n(b'x', sixteen_mib));
    let mut oversized_secret = frame(&format!(
        r#"{{"op":"put","name":"big","bind":null,"ttl_secs":null,"len":{sixteen_mib}}}"#
    ));
    oversized_secret.extend(std::iter::repeat_n(b'y', sixteen_mib));
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "garbage",
            b"\xde\xad\xbe\xef not a frame at all".to_vec(),
            Some("larger than the limit"),
        ),
        ("bad json", frame("{not json"), Some("malformed")),
        (
            "unknown op",
            frame(r#"{"op":"format_disk"}"#),
            Some("malformed"),
        ),
        (
            "bad name",
            frame(r#"{"op":"get","name":"a/b"}"#),
            Some("invalid secret name"),
        ),
        (
            "truncated header",
            frame(r#"{"op":"list"}"#)[..8].to_vec(),
            None,
        ),
        (
            "truncated secret",
            {
                let mut bytes =
                    frame(r#"{"op":"put","name":"t","bind":null,"ttl_secs":null,"len":100}"#);
                bytes.extend_from_slice(b"only ten b");
                bytes
            },
            None,
        ),
        (
            "16 MiB frame",
            oversized_frame,
            Some("larger than the limit"),
        ),
        (
            "16 MiB secret",
            oversized_secret,
            Some("larger than the limit"),
        ),
    ];
    for (what, bytes, expected) in cases {
        let reply = send(&guardian, &bytes);
        if let Some(expected) = expected {
            let message = reply_message(&reply);
            assert!(
                message.contains(expected),
                "{what}: unexpected reply {message:?}"
            );
        }
        assert_eq!(guardian.status()["secrets"], 1, "{what}: secrets disturbed");
    }
    let (rc, out, _) = session.run("$NS get keep");
    assert_eq!((rc, out.as_slice()), (0, &b"keepme"[..]));
    let malformed = guardian.audit_of("malformed");
    assert!(
        malformed.len() >= 6,
        "malformed attempts not audited: {malformed:?}"
    );
}
