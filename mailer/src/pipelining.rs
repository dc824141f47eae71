//! SMTP command pipelining (RFC 2920) on lettre's connection: `MAIL FROM`, every `RCPT TO` and
//! `DATA` go out in one write and their replies are read in order, so an email costs two round
//! trips to the relay (the envelope group, then the content) instead of three plus one per
//! recipient.
//!
//! lettre neither pipelines nor records whether the relay offers it, so the pool asks once per
//! connection with an `EHLO` of its own ([`offers_pipelining`]) and sends with [`send`] only where
//! the relay said `PIPELINING`. lettre still writes the commands (its `Display` forms), reads and
//! parses every reply, and dot-stuffs the content.
//!
//! A refused command leaves the replies to the commands after it unread, so the connection is
//! out of step: the caller must not reuse a connection after an error ([`send`] says so).

use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;

/// Whether the relay lists `PIPELINING` in its answer to an `EHLO` sent now (RFC 5321 allows a
/// client to send `EHLO` again; it resets no more than a `RSET` would).
pub(crate) async fn offers_pipelining(conn: &mut AsyncSmtpConnection, hello: &ClientId) -> Result<bool, SmtpError> {
    let reply = conn.command(Ehlo::new(hello.clone())).await?;
    Ok(reply.message().any(|line| line.split_whitespace().next().is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING"))))
}

/// Sends `email` to the recipients of `envelope` with the envelope's commands pipelined; the
/// relay's reply to the content when it accepted it.
///
/// An email or address that is not ASCII needs `SMTPUTF8` or `8BITMIME` parameters, which lettre
/// checks against what the relay offers: those go out through lettre's own `send`, unpipelined.
///
/// # Errors
///
/// lettre's error for the first refused command or a broken connection. After an error the
/// connection may have replies pending: drop it.
pub(crate) async fn send(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
) -> Result<Response, SmtpError> {
    let ascii_addresses = envelope.from().into_iter().chain(envelope.to()).all(|a| AsRef::<str>::as_ref(a).is_ascii());
    if !(ascii_addresses && email.is_ascii()) {
        return conn.send(envelope, email).await;
    }
    // Each command's text ends with CRLF: the group is their concatenation.
    let mut group = Mail::new(envelope.from().cloned(), Vec::new()).to_string();
    for to in envelope.to() {
        group.push_str(&Rcpt::new(to.clone(), Vec::new()).to_string());
    }
    group.push_str(&Data.to_string());
    // `command` writes the whole group and reads the first reply (MAIL's); then one per RCPT and
    // DATA's 354, in order. A negative reply is an error (lettre's `read_response`).
    conn.command(group).await?;
    for _ in envelope.to() {
        conn.read_response().await?;
    }
    conn.read_response().await?;
    conn.message(email).await
}
