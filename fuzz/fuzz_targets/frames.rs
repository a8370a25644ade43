//! The socket's parser: any bytes a client sends as a frame become a typed
//! request or a clear error, never a panic, and a request that parses
//! re-encodes to one that parses the same.

#![no_main]

use guardian::protocol::{self, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((prefix, header)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = protocol::header_len(*prefix) else {
        return;
    };
    let header = &header[..len.min(header.len())];
    if let Ok(request) = protocol::decode::<Request>(header) {
        if let Request::Put { len, .. } = &request {
            let _ = protocol::check_secret_len(*len);
        }
        let again = protocol::encode(&request);
        let reparsed: Request = protocol::decode(&again[4..]).expect("an encoded request parses");
        assert_eq!(reparsed, request);
    }
    // The client parses the guardian's answers with the same code.
    let _ = protocol::decode::<Response>(header);
});
