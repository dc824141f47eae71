//! Fuzz smoke on every test run (issue 19): each `fuzz/` target's body runs over its committed
//! seeds (`fuzz/seeds/<target>/`: valid inputs from the encoders, and inputs that once failed),
//! the local `cargo fuzz` corpus if there is one (`fuzz/corpus/<target>/`, not committed), and
//! over a fixed number of inputs mutated from it with a fixed seed, so every CI run repeats
//! the same inputs. A panic names the target and prints the input in hex (commit it to the
//! corpus once fixed).
//!
//! The real fuzzer (`cargo fuzz run <target>`, nightly and libFuzzer) explores far more; this
//! only keeps the targets building and their bodies honest on stable, in seconds.

#[path = "../fuzz/bodies/device_csv.rs"]
mod device_csv;
#[path = "../fuzz/bodies/relay_link.rs"]
mod relay_link;
#[path = "../fuzz/bodies/spool_records.rs"]
mod spool_records;
#[path = "../fuzz/bodies/uplink_frames.rs"]
mod uplink_frames;

use std::path::Path;

/// Mutated inputs per target and run.
const MUTATIONS: usize = 20_000;
/// Longest mutated input.
const MAX_INPUT: usize = 4_096;

/// xorshift64*: a deterministic generator, so that every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// One mutation of `input` (bit flips, byte sets, inserts, deletes, duplicated ranges,
/// truncation, splices with another corpus entry, or random bytes).
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = [0, 0xFF, 0x7F, 0x80, rng.next() as u8][rng.below(5)];
            }
            2 => out.insert(rng.below(len + 1), rng.next() as u8),
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                out.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let copy = out[start..end].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, copy);
            }
            5 => out.truncate(rng.below(len + 1)),
            6 => {
                let cut = rng.below(other.len() + 1);
                out.extend_from_slice(&other[cut..]);
            }
            _ => out = (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
        }
    }
    out.truncate(MAX_INPUT);
    out
}

/// The committed seeds of `target`, then its local `cargo fuzz` corpus (if any).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = root.join("seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|entry| entry.expect("seed entry").path())
        .collect();
    files.sort();
    if let Ok(local) = std::fs::read_dir(root.join("corpus").join(target)) {
        let mut found: Vec<_> = local.filter_map(|e| e.ok().map(|e| e.path())).collect();
        found.sort();
        files.extend(found);
    }
    files.iter().map(|f| std::fs::read(f).expect("corpus file")).collect()
}

fn smoke(target: &str, run: fn(&[u8]), seed: u64) {
    let corpus = corpus(target);
    assert!(!corpus.is_empty(), "{target}: the corpus is empty");
    let check = |input: &[u8]| {
        if std::panic::catch_unwind(|| run(input)).is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{target} panicked on the input {hex}");
        }
    };
    for input in &corpus {
        check(input);
    }
    let mut rng = Rng(seed);
    for _ in 0..MUTATIONS {
        let input = &corpus[rng.below(corpus.len())];
        let other = &corpus[rng.below(corpus.len())];
        check(&mutate(&mut rng, input, other));
    }
}

#[test]
fn uplink_frames_survive_the_corpus_and_its_mutations() {
    smoke("uplink_frames", uplink_frames::run, 0x5EED_0001);
}

#[test]
fn device_csv_survives_the_corpus_and_its_mutations() {
    smoke("device_csv", device_csv::run, 0x5EED_0003);
}

#[test]
fn relay_link_requests_and_answers_survive_the_corpus_and_its_mutations() {
    smoke("relay_link", relay_link::run, 0x5EED_0004);
}

#[test]
fn spool_records_survive_the_corpus_and_its_mutations() {
    smoke("spool_records", spool_records::run, 0x5EED_0002);
}

/// Writes the generated seeds of the corpus (run once with `FLEETPULSE_WRITE_FUZZ_SEEDS=1`
/// after a format change, and commit them); otherwise checks that they are committed.
#[test]
fn the_seeds_are_committed() {
    use bytes::BytesMut;
    use fleetpulse_proto::FrameEncoder;
    use fleetpulse_proto::wire::{DataFrame, Heartbeat, Hello, Message, Uplink};

    let hello = Uplink::Hello(Hello {
        protocol_version: fleetpulse_proto::PROTOCOL_VERSION,
        mac: "001565aabbcc".into(),
        serial: "SN1".into(),
        model: "T54W".into(),
        firmware: "96.86.0.100".into(),
        credential: "cred".into(),
        heartbeat_interval_s: 30,
    });
    let beat = Uplink::Data(DataFrame { seq: 1, sent_at_ms: 5, body: Message::Heartbeat(Heartbeat { uptime_s: 60 }) });
    let mut stream = BytesMut::new();
    let mut encoder = FrameEncoder::default();
    encoder.encode(&hello, &mut stream).expect("encode");
    encoder.encode(&beat, &mut stream).expect("encode");
    let mut segment = Vec::new();
    for (id, payload) in [(1u64, &b"first"[..]), (2, b""), (3, &[0xF5, b'S', b'P', b'L'])] {
        fleetpulse_store::spool::format::encode(id, payload, &mut segment).expect("encode");
    }
    use fleetpulse_proto::relay_link::{LinkAnswer, LinkRequest, LinkRequestKind};
    let request = |kind| LinkRequest { credential: "relay-site-a-0123456789".into(), kind }.encode().expect("encode");
    let frames = request(LinkRequestKind::Frames { resend: true, body_len: 4096 });
    let wakes = request(LinkRequestKind::Wakes { after: Some(7) });
    let refused = LinkAnswer::Refused { close_code: 1, reason: "unknown relay".into() }.encode();
    let woken = LinkAnswer::Wakes { next: 9, devices: vec![1, 2, 3] }.encode();
    let ok = LinkAnswer::Ok(stream.to_vec()).encode();
    // The uplink body reads its first byte as the chunk size: whole, byte by byte, in sevens.
    // The relay link body reads its first byte as "request (even) or answer (odd)".
    let seeds: [(&str, &str, Vec<u8>); 9] = [
        ("relay_link", "request-frames", [&[0u8][..], &frames].concat()),
        ("relay_link", "request-wakes", [&[0u8][..], &wakes].concat()),
        ("relay_link", "answer-refused", [&[1u8][..], &refused].concat()),
        ("relay_link", "answer-wakes", [&[1u8][..], &woken].concat()),
        ("relay_link", "answer-ok", [&[1u8][..], &ok].concat()),
        ("uplink_frames", "hello-and-heartbeat-whole", [&[255u8][..], &stream].concat()),
        ("uplink_frames", "hello-and-heartbeat-bytewise", [&[1u8][..], &stream].concat()),
        ("uplink_frames", "hello-and-heartbeat-sevens", [&[7u8][..], &stream].concat()),
        ("spool_records", "three-records", segment),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (target, name, bytes) in seeds {
        let path = root.join(target).join(format!("seed-{name}"));
        if std::env::var_os("FLEETPULSE_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("corpus dir");
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == bytes, "{}: the seed differs from the encoders' (rewrite the seeds)", path.display());
    }
}
