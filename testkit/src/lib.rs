//! Test support: real database servers for tests, each in a temporary directory on a free
//! loopback port, stopped when dropped. A missing server binary is an error that says how to
//! install it (tests never skip). `browser` drives headless Chromium through chromedriver.

pub mod browser;
pub mod clickhouse;
pub mod postgres;
pub mod smtp;

/// Where [`free_port`] picks: below the kernel's ephemeral range (32768–60999 by default), which
/// sockets bound to port 0 and outgoing connections draw from.
const PICK_FROM: u32 = 20_000;
const PICK_SPAN: u32 = 12_000;

/// A port free on 127.0.0.1 for both TCP and UDP (bound and released; the caller binds it right
/// away). It is picked below the ephemeral range, so no socket bound to port 0 elsewhere (a
/// server's own, another test's connection) can take it before the caller binds it: only another
/// explicit pick could, and picks walk the range from a random start, one process apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = || {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % PICK_SPAN
    };
    let _ = NEXT.compare_exchange(u32::MAX, start(), Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..PICK_SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % PICK_SPAN;
        let port = u16::try_from(PICK_FROM + offset).expect("the range is below 65536");
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free loopback port in {PICK_FROM}..{}", PICK_FROM + PICK_SPAN)
}
