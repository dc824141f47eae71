//! Fuzzes the device-facing decoder (the body: `fuzz/bodies/uplink_frames.rs`).
#![no_main]

#[path = "../bodies/uplink_frames.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
