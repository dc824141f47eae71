//! The one check of a receiver address, shared by the API (before anything is stored) and the
//! mailer (before it renders or sends): what this accepts, the mailer can send to.

use lettre::Address;
use lettre::message::Mailbox;

use crate::MailError;

/// Longest receiver address, in bytes (RFC 5321's path limit).
pub const MAX_RECEIVER_BYTES: usize = 254;

/// Parses `receiver` as a bare address the mailer can send to: lettre's [`Address`] (the SMTP
/// envelope, [`crate::Mailer::send_raw`]) and [`Mailbox`] (the `To:` header,
/// [`crate::render_account`]) both parse it to the same address, with no display name, no quoted
/// local part and only ASCII (no SMTPUTF8: the relay may not offer it), at most
/// [`MAX_RECEIVER_BYTES`].
///
/// # Errors
///
/// [`MailError::Receiver`] saying why.
pub fn parse_receiver(receiver: &str) -> Result<Address, MailError> {
    let refuse = |why: &str| MailError::Receiver { address: receiver.to_owned(), why: why.to_owned() };
    if receiver.len() > MAX_RECEIVER_BYTES {
        return Err(refuse("longer than 254 bytes"));
    }
    if !receiver.is_ascii() {
        return Err(refuse("not ASCII"));
    }
    if receiver.contains('"') {
        return Err(refuse("a quoted local part"));
    }
    let address: Address = receiver.parse().map_err(|e: lettre::address::AddressError| refuse(&e.to_string()))?;
    let mailbox: Mailbox = receiver.parse().map_err(|e: lettre::address::AddressError| refuse(&e.to_string()))?;
    if mailbox.name.is_some() || mailbox.email != address || AsRef::<str>::as_ref(&address) != receiver {
        return Err(refuse("not a bare address"));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_the_mailer_cannot_send_to_are_refused() {
        for good in ["a@x.y", "first.last+tag@example.com", "o'brien@example.co.uk", "a@b"] {
            assert_eq!(parse_receiver(good).map(|a| a.to_string()).ok().as_deref(), Some(good), "{good}");
        }
        for bad in [
            "\"evil>\"@x.y",
            "a@x.y,evil@z.w",
            "bcc:evil@x.y",
            "x@y.z>",
            "ümlaut@x.y",
            "Name <a@x.y>",
            "<a@x.y>",
            "a@x.y\r\nBcc: evil@z.w",
            "a @x.y",
            "",
            "@x.y",
            "a@",
            "a@x.y;b@x.y",
        ] {
            assert!(parse_receiver(bad).is_err(), "{bad:?}");
        }
        assert!(parse_receiver(&format!("a@{}.y", "x".repeat(MAX_RECEIVER_BYTES))).is_err());
    }
}
