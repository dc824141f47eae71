//! Fuzzes the device-facing decoder: arbitrary bytes pushed in arbitrary chunks must never
//! panic, and every frame that decodes must pass (or fail) domain validation without panicking.
#![no_main]

use fleetpulse_proto::FrameDecoder;
use fleetpulse_proto::domain::{DeviceHello, DeviceMessage};
use fleetpulse_proto::wire::Uplink;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
