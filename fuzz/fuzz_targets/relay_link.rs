//! Fuzzes the relay link's request and answer decoders (the body: `fuzz/bodies/relay_link.rs`).
#![no_main]

#[path = "../bodies/relay_link.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
