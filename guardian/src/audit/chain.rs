//! The line format that makes the log tamper-evident.
//!
//! A line is a JSON object whose last two keys are `prev` (the hash of the
//! previous line) and `hash`, the SHA-256 of the line's own bytes up to (not
//! including) `,"hash":`, closed with `}`. So editing a line breaks its own
//! `hash`, and removing, reordering or inserting lines breaks the next line's
//! `prev` and the sequence numbers.

#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};

/// The `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &[u8] = b",\"hash\":\"";

/// Appends `"hash"` to a serialised record (a JSON object) and a newline.
pub fn seal(mut record: Vec<u8>) -> (Vec<u8>, String) {
    let hash = hex::encode(Sha256::digest(&record));
    record.pop(); // the closing brace
    record.extend_from_slice(HASH_KEY);
    record.extend_from_slice(hash.as_bytes());
    record.extend_from_slice(b"\"}\n");
    (record, hash)
}

/// What one sealed line says about its place in the chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Link {
    /// The record's sequence number.
    pub seq: u64,
    /// The hash of the previous line it claims.
    pub prev: String,
    /// Its own hash, checked against its bytes.
    pub hash: String,
}

/// Checks one line (without its newline): valid JSON, a `hash` that matches
/// its bytes, a `seq` and a `prev`.
pub fn open(line: &[u8]) -> Result<Link, String> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|err| format!("not a JSON record ({err})"))?;
    let field = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let hash = field("hash").ok_or("no hash")?;
    let prev = field("prev").ok_or("no prev")?;
    let seq = value.get("seq").and_then(|v| v.as_u64()).ok_or("no seq")?;
    let cut = line
        .windows(HASH_KEY.len())
        .rposition(|window| window == HASH_KEY)
        .ok_or("hash is not the last key")?;
    let mut body = line[..cut].to_vec();
    body.push(b'}');
    if hex::encode(Sha256::digest(&body)) != hash {
        return Err("its hash does not match its content (edited)".to_owned());
    }
    Ok(Link { seq, prev, hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lines_open_and_edits_are_caught() {
        let (line, hash) = seal(br#"{"seq":1,"action":"get","prev":"00"}"#.to_vec());
        let line = &line[..line.len() - 1];
        let link = open(line).unwrap();
        assert_eq!(
            link,
            Link {
                seq: 1,
                prev: "00".to_owned(),
                hash
            }
        );
        let edited = String::from_utf8(line.to_vec())
            .unwrap()
            .replace("get", "put");
        assert!(open(edited.as_bytes()).unwrap_err().contains("edited"));
        assert!(open(b"{\"seq\":1").is_err());
    }
}
