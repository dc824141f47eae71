//! The body of the `uplink_frames` fuzz target, shared with the fuzz smoke test of the workspace
//! (`tests/fuzz_smoke.rs`): arbitrary bytes pushed into the device-facing decoder in arbitrary
//! chunks must never panic, and every frame that decodes must pass (or fail) domain validation
//! without panicking.

use fleetpulse_proto::FrameDecoder;
use fleetpulse_proto::domain::{DeviceHello, DeviceMessage};
use fleetpulse_proto::wire::Uplink;

/// One input: the first byte is the chunk size, the rest the stream.
pub fn run(data: &[u8]) {
    let (split, bytes) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    let mut decoder = FrameDecoder::new(64 * 1024);
    for chunk in bytes.chunks(split) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame::<Uplink>() {
                Ok(Some(Uplink::Hello(h))) => {
                    let _ = DeviceHello::try_from(h);
                }
                Ok(Some(Uplink::Data(d))) => {
                    let _ = DeviceMessage::try_from(d.body);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}
