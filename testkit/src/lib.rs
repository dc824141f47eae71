//! Test support: real database servers for tests, each in a temporary directory on a free
//! loopback port, stopped when dropped. A missing server binary is an error that says how to
//! install it (tests never skip). `browser` drives headless Chromium through chromedriver.

pub mod browser;
pub mod clickhouse;
pub mod postgres;
pub mod smtp;

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
