//! The body of the `relay_link` fuzz target, shared with the fuzz smoke test of the workspace
//! (`tests/fuzz_smoke.rs`): arbitrary bytes read as a relay link request header (the server's
//! side) or answer (the relay's side) must never panic, and whatever decodes must encode back to
//! what it was decoded from.

use fleetpulse_proto::relay_link::{LinkAnswer, LinkRequest, PREFIX_LEN};

/// One input: the first byte's low bit chooses a request header (0) or an answer (1).
pub fn run(data: &[u8]) {
    let Some((which, bytes)) = data.split_first() else { return };
    if which & 1 == 0 {
        // As the server reads it: the prefix first, then the length it announces.
        let Some(prefix) = bytes.get(..PREFIX_LEN) else { return };
        let prefix: [u8; PREFIX_LEN] = prefix.try_into().expect("prefix length");
        let Ok(rest) = LinkRequest::rest_len(prefix) else { return };
        let Some(header) = bytes.get(..PREFIX_LEN + rest) else { return };
        if let Ok(request) = LinkRequest::decode(header) {
            assert_eq!(request.encode().expect("a decoded request encodes"), header, "request round trip");
        }
    } else if let Ok(answer) = LinkAnswer::decode(bytes) {
        assert_eq!(LinkAnswer::decode(&answer.encode()).expect("an encoded answer decodes"), answer);
    }
}
