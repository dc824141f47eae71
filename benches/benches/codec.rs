//! Frame codec: encode one message, then decode it through rkyv's validated path, per kind.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_proto::wire::*;
use fleetpulse_proto::{FrameDecoder, FrameEncoder};

fn messages() -> Vec<(&'static str, Uplink)> {
    let data = |body| Uplink::Data(DataFrame { seq: 123_456, sent_at_ms: 1_700_000_000_000, body });
    vec![
        ("heartbeat", data(Message::Heartbeat(Heartbeat { uptime_s: 86_400 }))),
        (
            "status",
            data(Message::StatusChange(StatusChange {
                lines: vec![
                    SipLine { line: 1, account: "1001@pbx.example.com".into(), state: SipState::Registered },
                    SipLine { line: 2, account: "1002@pbx.example.com".into(), state: SipState::Unregistered },
                ],
                call_status: CallStatus::Idle,
                firmware: "96.86.0.100".into(),
                public_ip: Some(IpAddress::V4([203, 0, 113, 7])),
                private_ip: Some(IpAddress::V4([10, 0, 0, 7])),
                uptime_s: 86_400,
                last_reboot_ms: Some(1_700_000_000_000),
            })),
        ),
        (
            "resource",
            data(Message::ResourceReport(ResourceReport {
                cpu_centi_pct: 4_250,
                mem_used_bytes: 300 << 20,
                mem_total_bytes: 1 << 30,
            })),
        ),
        (
            "alarm",
            data(Message::Alarm(AlarmReport {
                code: 301,
                action: AlarmAction::Raise,
                description: "Call failed: 486 Busy Here".into(),
                log: None,
            })),
        ),
    ]
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_roundtrip");
    group.throughput(Throughput::Elements(1));
    for (name, msg) in messages() {
        let mut encoder = FrameEncoder::default();
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::with_capacity(1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                encoder.encode(std::hint::black_box(&msg), &mut buf).expect("encodes");
                decoder.push(&buf);
                let decoded = decoder.next_frame::<Uplink>().expect("valid").expect("complete");
                std::hint::black_box(decoded)
            })
        });
    }
    group.finish();

    // Many frames per stream read: a 16 KiB chunk of resource reports decoded in one go.
    let mut group = c.benchmark_group("frame_decode_batch");
    let (_, msg) = messages().swap_remove(2);
    let mut encoder = FrameEncoder::default();
    let mut chunk = BytesMut::new();
    let mut n = 0u64;
    while chunk.len() < 16 * 1024 - 128 {
        encoder.encode(&msg, &mut chunk).expect("encodes");
        n += 1;
    }
    group.throughput(Throughput::Elements(n));
    group.bench_function("resource_x_16KiB", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter(|| {
            decoder.push(&chunk);
            while let Some(m) = decoder.next_frame::<Uplink>().expect("valid") {
                std::hint::black_box(m);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
