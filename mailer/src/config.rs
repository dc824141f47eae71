//! SMTP relay configuration, read from the config file.

use std::time::Duration;

use serde::Deserialize;

/// How the connection to the relay is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// No TLS at all: only for a trusted relay on the same host or network (and tests).
    Plain,
    /// Plain connection upgraded with `STARTTLS`, which is required (usually port 587).
    StartTls,
    /// TLS from the first byte, "implicit TLS" (usually port 465).
    Tls,
}

/// Where and how notification emails are sent.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct SmtpConfig {
    /// Relay host name (also the name its TLS certificate is checked against).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Transport security.
    pub security: Security,
    /// Login, if the relay requires authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// Sender mailbox, e.g. `fleetpulse <alarms@example.com>`.
    pub from: String,
    /// Extra trusted root certificate (PEM) for a relay with a private CA; the public web roots
    /// are trusted either way.
    #[serde(default)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Timeout of each SMTP command (connect, each reply).
    #[serde(default = "default_timeout", with = "seconds")]
    pub timeout: Duration,
    /// Connections to the relay open at once, and so emails in flight at once (default
    /// [`DEFAULT_CONNECTIONS`], 1 to [`MAX_CONNECTIONS`]).
    #[serde(default = "default_connections")]
    pub connections: usize,
}

/// Connections to the relay by default. With pipelining, 10 carried ≈ 2,000 emails/s to a local
/// relay on a loaded 2-core host, and 32 did no better: each send took longer, for the same CPU
/// (`docs/PERFORMANCE.md`, alarm to inbox, fifth round).
pub const DEFAULT_CONNECTIONS: usize = 10;

/// Most connections to the relay a config may ask for.
pub const MAX_CONNECTIONS: usize = 256;

fn default_connections() -> usize {
    DEFAULT_CONNECTIONS
}

impl std::fmt::Debug for SmtpConfig {
    /// Like the derived form, with the password redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("ca_cert", &self.ca_cert)
            .field("timeout", &self.timeout)
            .field("connections", &self.connections)
            .finish()
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `timeout` is written as a number of seconds (`timeout = 10` or `timeout = 2.5`).
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_from_toml_with_defaults_and_redacts_the_password() {
        let config: SmtpConfig = toml::from_str(
            r#"
            host = "smtp.example.com"
            port = 587
            security = "start_tls"
            username = "alarms"
            password = "s3cret"
            from = "fleetpulse <alarms@example.com>"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.security, Security::StartTls);
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.connections, DEFAULT_CONNECTIONS);
        assert!(!format!("{config:?}").contains("s3cret"));
        let config: SmtpConfig =
            toml::from_str("host = \"h\"\nport = 25\nsecurity = \"plain\"\nfrom = \"a@b.c\"\ntimeout = 2.5\n")
                .expect("valid config");
        assert_eq!((config.username, config.timeout), (None, Duration::from_millis(2_500)));
        let config: SmtpConfig =
            toml::from_str("host = \"h\"\nport = 25\nsecurity = \"plain\"\nfrom = \"a@b.c\"\nconnections = 32\n")
                .expect("valid config");
        assert_eq!(config.connections, 32);
        assert!(
            toml::from_str::<SmtpConfig>("host = \"h\"\nport = 25\nsecurity = \"ssl\"\nfrom = \"a@b.c\"\n").is_err()
        );
    }
}
