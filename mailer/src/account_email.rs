//! Account emails (ACC-3, ACC-4, TEN-1): a password reset link, an emailed login code, the
//! details of a new account. Queued in the durable outbox as versioned JSON next to the alarm
//! notifications ([`StoredPayload`] tells them apart: alarm payloads have no `kind`, so the
//! payloads queued before account emails existed still render), and rendered at send time with
//! the portal URL of the [`RenderContext`].
//!
//! Account emails are never merged into digests: each is its own message, with its
//! idempotency key as its `Message-ID`.

use std::fmt::Write as _;

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use serde::{Deserialize, Serialize};

use fleetpulse_proto::UnixMillis;

use crate::render::{escape_html, rfc3339, single_line};
use crate::{MailError, OutboxError, OutboxPayload, RenderContext};

/// Largest payload accepted back from the store.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The account email format written now.
pub const ACCOUNT_EMAIL_VERSION: u32 = 1;
/// The `kind` of account email payloads.
const KIND: &str = "account";

/// What an account email says.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountEmail {
    /// A single-use link to choose a new password (ACC-4).
    PasswordReset {
        /// The reset token (hex), put in the link `{portal}/reset-password?token=…`.
        token: String,
        /// When the link stops working (Unix ms).
        expires_at: i64,
    },
    /// A 6-digit login code (ACC-3 email verification).
    LoginCode {
        /// The code.
        code: String,
        /// When it stops working (Unix ms).
        expires_at: i64,
    },
    /// A new account's details (TEN-1).
    AccountCreated {
        /// Its login email.
        login_email: String,
        /// Its role, as the API names it.
        role: String,
        /// The generated temporary password, if the creator gave none.
        temporary_password: Option<String>,
    },
    /// An order placed for an enterprise, or cancelled (ORD-1), to its master administrator and
    /// its channel.
    Order {
        /// `placed` or `cancelled`.
        event: String,
        /// The order's id.
        order_id: u64,
        /// The enterprise's name.
        enterprise: String,
        /// The package.
        package: String,
        /// Devices it allows.
        max_devices: u32,
        /// Months it lasts.
        duration_months: u32,
        /// Its effective date (`YYYY-MM-DD`, the enterprise's time zone).
        effective_date: String,
        /// When it expires (Unix ms).
        ends_at: i64,
    },
}

impl std::fmt::Debug for AccountEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountEmail::PasswordReset { expires_at, .. } => {
                f.debug_struct("PasswordReset").field("expires_at", expires_at).finish_non_exhaustive()
            }
            AccountEmail::LoginCode { expires_at, .. } => {
                f.debug_struct("LoginCode").field("expires_at", expires_at).finish_non_exhaustive()
            }
            AccountEmail::AccountCreated { login_email, role, .. } => f
                .debug_struct("AccountCreated")
                .field("login_email", login_email)
                .field("role", role)
                .finish_non_exhaustive(),
            AccountEmail::Order { event, order_id, .. } => {
                f.debug_struct("Order").field("event", event).field("order_id", order_id).finish_non_exhaustive()
            }
        }
    }
}

/// A queued account email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEmailPayload {
    /// Always `"account"`: what tells this payload from an alarm notification.
    pub kind: String,
    /// Format version ([`ACCOUNT_EMAIL_VERSION`]).
    pub version: u32,
    /// The idempotency key (32 hex digits): the `Message-ID`.
    pub key: String,
    /// What the email says.
    pub email: AccountEmail,
}

impl AccountEmailPayload {
    /// A payload of the current version.
    pub fn new(key: String, email: AccountEmail) -> AccountEmailPayload {
        AccountEmailPayload { kind: KIND.to_owned(), version: ACCOUNT_EMAIL_VERSION, key, email }
    }

    /// The JSON stored in the outbox.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a payload of strings and numbers always serializes")
    }

    /// The payload without its secrets (reset token, login code, temporary password): what the
    /// outbox keeps once the email is no longer pending.
    pub fn redacted(&self) -> AccountEmailPayload {
        let email = match &self.email {
            AccountEmail::PasswordReset { expires_at, .. } => {
                AccountEmail::PasswordReset { token: String::new(), expires_at: *expires_at }
            }
            AccountEmail::LoginCode { expires_at, .. } => {
                AccountEmail::LoginCode { code: String::new(), expires_at: *expires_at }
            }
            AccountEmail::AccountCreated { login_email, role, .. } => AccountEmail::AccountCreated {
                login_email: login_email.clone(),
                role: role.clone(),
                temporary_password: None,
            },
            // Nothing secret in an order email.
            order @ AccountEmail::Order { .. } => order.clone(),
        };
        AccountEmailPayload { email, ..self.clone() }
    }

    /// Parses a stored payload, checking its size, kind and version.
    pub fn from_json(json: &str) -> Result<AccountEmailPayload, OutboxError> {
        if json.len() > MAX_PAYLOAD_BYTES {
            return Err(MailError::Payload(format!("account email payload of {} bytes is over the limit", json.len())));
        }
        let p: AccountEmailPayload =
            serde_json::from_str(json).map_err(|e| MailError::Payload(format!("account email payload: {e}")))?;
        if p.kind != KIND || p.version != ACCOUNT_EMAIL_VERSION {
            return Err(MailError::Payload(format!(
                "account email payload kind {:?} version {} is not {KIND:?} {ACCOUNT_EMAIL_VERSION}",
                p.kind, p.version
            )));
        }
        Ok(p)
    }
}

/// Any payload the outbox holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredPayload {
    /// An alarm notification (no `kind` field: every payload written before account emails).
    Alarm(OutboxPayload),
    /// An account email (`"kind": "account"`).
    Account(AccountEmailPayload),
}

impl StoredPayload {
    /// Parses a stored payload of either kind; an unknown kind is an error.
    pub fn from_json(json: &str) -> Result<StoredPayload, OutboxError> {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(default)]
            kind: Option<String>,
        }
        if json.len() > MAX_PAYLOAD_BYTES.max(1 << 20) {
            return Err(MailError::Payload(format!("payload of {} bytes is over the limit", json.len())));
        }
        let kind: Kind = serde_json::from_str(json).map_err(|e| MailError::Payload(format!("payload: {e}")))?;
        match kind.kind.as_deref() {
            None => OutboxPayload::from_json(json).map(StoredPayload::Alarm),
            Some(KIND) => AccountEmailPayload::from_json(json).map(StoredPayload::Account),
            Some(other) => Err(MailError::Payload(format!("unknown payload kind {other:?}"))),
        }
    }
}

/// Renders an account email to `receiver` (`multipart/alternative`: plain text and HTML).
///
/// # Errors
///
/// [`MailError::Address`] if `receiver` is not a valid mailbox, [`MailError::Message`] if lettre
/// cannot build the message.
pub fn render_account(receiver: &str, p: &AccountEmailPayload, ctx: &RenderContext) -> Result<Message, MailError> {
    let to: Mailbox = receiver.parse().map_err(|source| MailError::Address {
        what: "receiver",
        address: receiver.to_owned(),
        source,
    })?;
    // The key names the message; only hex digits reach the headers.
    let key: String = p.key.chars().filter(char::is_ascii_hexdigit).take(64).collect();
    let (subject, lines) = content(&p.email, ctx);
    let text = lines.iter().fold(String::new(), |mut t, l| {
        let _ = writeln!(t, "{l}");
        t
    });
    let mut html =
        format!("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{subject}</title></head><body>\n");
    for l in &lines {
        if l.is_empty() {
            continue;
        }
        let escaped = escape_html(l);
        // Lines that are links become links.
        if l.starts_with("https://") || l.starts_with("http://") {
            let _ = writeln!(html, "<p><a href=\"{escaped}\">{escaped}</a></p>");
        } else {
            let _ = writeln!(html, "<p>{escaped}</p>");
        }
    }
    html.push_str("</body></html>\n");
    Ok(Message::builder()
        .from(ctx.from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{key}@fleetpulse>")))
        .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Fleetpulse-Key"), key.clone()))
        .multipart(
            MultiPart::alternative()
                .boundary(format!("fleetpulse-{key}"))
                .singlepart(SinglePart::plain(text))
                .singlepart(SinglePart::html(html)),
        )?)
}

/// The subject and the lines of the body.
fn content(email: &AccountEmail, ctx: &RenderContext) -> (String, Vec<String>) {
    let portal = ctx.portal_url.trim_end_matches('/');
    match email {
        AccountEmail::PasswordReset { token, expires_at } => {
            let token: String = token.chars().filter(char::is_ascii_alphanumeric).collect();
            (
                "[fleetpulse] Reset your password".to_owned(),
                vec![
                    "Someone asked to reset the password of your fleetpulse account.".to_owned(),
                    "Open this link to choose a new password. It works once, until ".to_owned()
                        + &rfc3339(UnixMillis(*expires_at))
                        + ":",
                    String::new(),
                    format!("{portal}/reset-password?token={token}"),
                    String::new(),
                    "If you did not ask for this, ignore this email: your password stays as it is.".to_owned(),
                ],
            )
        }
        AccountEmail::LoginCode { code, expires_at } => {
            let code: String = code.chars().filter(char::is_ascii_digit).collect();
            (
                "[fleetpulse] Your login code".to_owned(),
                vec![
                    format!("Your fleetpulse login code is {code}"),
                    format!("It works once, until {}.", rfc3339(UnixMillis(*expires_at))),
                    String::new(),
                    "If you did not just log in, someone knows your password: change it.".to_owned(),
                ],
            )
        }
        AccountEmail::AccountCreated { login_email, role, temporary_password } => {
            let mut lines = vec![
                "An account was created for you on fleetpulse.".to_owned(),
                String::new(),
                format!("Portal: {portal}"),
                format!("Login email: {}", single_line(login_email)),
                format!("Role: {}", single_line(role)),
            ];
            match temporary_password {
                Some(pw) => {
                    lines.push(format!("Temporary password: {}", single_line(pw)));
                    lines.push(String::new());
                    lines.push("You will choose your own password at your first login.".to_owned());
                }
                None => {
                    lines.push(String::new());
                    lines.push(
                        "Your administrator gives you your first password; you will choose your own at your first login."
                            .to_owned(),
                    );
                }
            }
            ("[fleetpulse] Your fleetpulse account".to_owned(), lines)
        }
        AccountEmail::Order {
            event,
            order_id,
            enterprise,
            package,
            max_devices,
            duration_months,
            effective_date,
            ends_at,
        } => {
            let cancelled = event == "cancelled";
            let what = if cancelled { "cancelled" } else { "placed" };
            let mut lines = vec![
                format!("Order {order_id} for {} was {what}.", single_line(enterprise)),
                String::new(),
                format!("Package: {}", single_line(package)),
                format!("Maximum devices: {max_devices}"),
                format!("Duration: {duration_months} months"),
                format!("Effective date: {}", single_line(effective_date)),
                format!("Expires: {}", rfc3339(UnixMillis(*ends_at))),
            ];
            if cancelled {
                lines.push(String::new());
                lines.push("The order will not take effect.".to_owned());
            }
            lines.push(String::new());
            lines.push(format!("{portal}/#/orders"));
            (format!("[fleetpulse] Order {order_id} {what}"), lines)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RenderContext {
        RenderContext {
            from: "fleetpulse <a@fleetpulse.test>".parse().expect("from"),
            portal_url: "https://p.test/".into(),
        }
    }

    /// The message as sent, with its quoted-printable soft line breaks and `=3D` undone (enough
    /// for the ASCII bodies here).
    fn formatted(m: &Message) -> String {
        String::from_utf8(m.formatted()).expect("utf-8").replace("=\r\n", "").replace("=3D", "=")
    }

    #[test]
    fn account_payloads_round_trip_and_alarm_payloads_still_parse() {
        let p = AccountEmailPayload::new(
            "ab".repeat(16),
            AccountEmail::PasswordReset { token: "00ff".into(), expires_at: 1_700_000_000_000 },
        );
        assert_eq!(StoredPayload::from_json(&p.to_json()).expect("parses"), StoredPayload::Account(p.clone()));
        let alarm = r#"{"version":1,"stage":"firing","enterprise_id":3,"enterprise_name":"Acme","strategy_id":4,"key":"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee","items":[],"omitted":0}"#;
        assert!(matches!(StoredPayload::from_json(alarm), Ok(StoredPayload::Alarm(_))));
        assert!(StoredPayload::from_json(r#"{"kind":"fax"}"#).is_err());
        let mut newer = p.clone();
        newer.version = 2;
        assert!(StoredPayload::from_json(&newer.to_json()).is_err());
        assert!(!format!("{p:?}").contains("00ff"), "Debug leaves secrets out");
        assert!(!p.redacted().to_json().contains("00ff"), "redaction removes the token");
    }

    #[test]
    fn emails_carry_the_link_the_code_and_the_details() {
        let reset = AccountEmailPayload::new(
            "cd".repeat(16),
            AccountEmail::PasswordReset { token: "00ff".into(), expires_at: 0 },
        );
        let m = formatted(&render_account("u@example.com", &reset, &ctx()).expect("renders"));
        assert!(m.contains("https://p.test/reset-password?token=00ff"), "{m}");
        assert!(m.contains(&format!("Message-ID: <{}@fleetpulse>", "cd".repeat(16))), "{m}");
        let code =
            AccountEmailPayload::new("01".repeat(16), AccountEmail::LoginCode { code: "012345".into(), expires_at: 0 });
        let m = formatted(&render_account("u@example.com", &code, &ctx()).expect("renders"));
        assert!(m.contains("Your fleetpulse login code is 012345"), "{m}");
        let created = AccountEmailPayload::new(
            "02".repeat(16),
            AccountEmail::AccountCreated {
                login_email: "new@example.com".into(),
                role: "enterprise_admin".into(),
                temporary_password: Some("Tmp<pw>".into()),
            },
        );
        let m = formatted(&render_account("new@example.com", &created, &ctx()).expect("renders"));
        for needle in
            ["Portal: https://p.test", "Login email: new@example.com", "Role: enterprise_admin", "Tmp&lt;pw&gt;"]
        {
            assert!(m.contains(needle), "{needle}: {m}");
        }
        assert!(render_account("not an address", &created, &ctx()).is_err());
    }
}
