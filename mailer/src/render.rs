//! Rendering a notification as an email: subject, a plain-text and an HTML part, headers.
//!
//! Everything a device supplies (descriptions, names) is untrusted: control characters are
//! removed from every value that goes into a header or a line of text, and the HTML part escapes
//! it. The `Message-ID` is derived from the notification's idempotency key, so a duplicate is
//! recognisable as one by every mail client.

use std::collections::HashMap;
use std::fmt::Write as _;

use fleetpulse_alarm_engine::{Notification, NotifiedAlarm, Receiver, Stage};
use fleetpulse_proto::{DeviceId, Severity, UnixMillis};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use crate::MailError;

/// Most characters of an alarm description shown in the subject.
pub const MAX_SUBJECT_DESCRIPTION_CHARS: usize = 80;
/// Most characters of a device label or enterprise name shown in the subject.
const MAX_SUBJECT_NAME_CHARS: usize = 64;
/// Most characters of a description in the body (descriptions come from devices).
const MAX_BODY_DESCRIPTION_CHARS: usize = 2_000;

/// What rendering needs beyond the notification itself.
#[derive(Clone, Debug)]
pub struct RenderContext {
    /// Sender mailbox (`From`).
    pub from: Mailbox,
    /// Base URL of the portal, e.g. `https://portal.example.com` (a trailing `/` is ignored).
    pub portal_url: String,
    /// Display name of the notification's enterprise.
    pub enterprise_name: String,
    /// Display names of devices (name or MAC); a device missing here is shown by its id.
    pub device_labels: HashMap<DeviceId, String>,
}

impl RenderContext {
    /// The label of a device: its display name, else its id.
    fn device_label(&self, device: DeviceId) -> String {
        match self.device_labels.get(&device) {
            Some(label) => single_line(label),
            None => device.to_string(),
        }
    }

    /// The portal page of one alarm type on one device.
    fn alarm_link(&self, alarm: &NotifiedAlarm) -> String {
        let base = self.portal_url.trim_end_matches('/');
        format!("{base}/alarms?device_id={}&code={}", alarm.device_id, alarm.code.0)
    }
}

/// Renders `n` as an email to its receiver (`multipart/alternative`: plain text and HTML).
///
/// # Errors
///
/// [`MailError::Address`] if the receiver's address is not a valid mailbox, [`MailError::Message`]
/// if lettre cannot build the message.
pub fn render(n: &Notification, ctx: &RenderContext) -> Result<Message, MailError> {
    let Receiver::Email(address) = &n.receiver;
    let to: Mailbox =
        address.parse().map_err(|source| MailError::Address { what: "receiver", address: address.clone(), source })?;
    let key = n.key.to_string();
    let message = Message::builder()
        .from(ctx.from.clone())
        .to(to)
        .subject(subject(n, ctx))
        .message_id(Some(format!("<{key}@fleetpulse>")))
        .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Fleetpulse-Key"), key.clone()))
        .multipart(
            MultiPart::alternative()
                .boundary(format!("fleetpulse-{key}"))
                .singlepart(SinglePart::plain(text_body(n, ctx)))
                .singlepart(SinglePart::html(html_body(n, ctx))),
        )?;
    Ok(message)
}

/// `[fleetpulse] Critical: Offline on 001565aabbcc: <description> (+2 more) — Acme`, with a
/// `Reminder:` or `Resolved:` prefix for those stages.
fn subject(n: &Notification, ctx: &RenderContext) -> String {
    let mut s = String::from("[fleetpulse] ");
    match n.stage {
        Stage::Firing => {}
        Stage::Repeat => s.push_str("Reminder: "),
        Stage::Resolved => s.push_str("Resolved: "),
    }
    let severity = n.items.iter().filter_map(|a| a.code.alarm_type()).map(|t| t.severity).min();
    s.push_str(severity.map_or("Alarm", severity_title));
    if let Some(first) = n.items.first() {
        let device = truncate(&ctx.device_label(first.device_id), MAX_SUBJECT_NAME_CHARS);
        let _ = write!(s, ": {} on {device}", type_name(first));
        let description = truncate(&single_line(&first.description), MAX_SUBJECT_DESCRIPTION_CHARS);
        if !description.is_empty() {
            let _ = write!(s, ": {description}");
        }
        if n.items.len() > 1 {
            let _ = write!(s, " (+{} more)", n.items.len() - 1);
        }
    }
    let _ = write!(s, " — {}", truncate(&single_line(&ctx.enterprise_name), MAX_SUBJECT_NAME_CHARS));
    s
}

fn text_body(n: &Notification, ctx: &RenderContext) -> String {
    let enterprise = single_line(&ctx.enterprise_name);
    let mut t = format!("{} for {enterprise}: {}\n", stage_heading(n.stage), alarm_count(n.items.len()));
    for a in &n.items {
        let _ = writeln!(t, "\n- {} ({})", type_name(a), severity_name(a));
        let _ = writeln!(t, "  Device:      {}", ctx.device_label(a.device_id));
        let _ = writeln!(t, "  Enterprise:  {enterprise}");
        let _ = writeln!(t, "  Severity:    {}", severity_name(a));
        let _ = writeln!(t, "  First:       {}", rfc3339(a.first_at));
        let _ = writeln!(t, "  Latest:      {}", rfc3339(a.latest_at));
        if let Some(at) = a.resolved_at {
            let _ = writeln!(t, "  Resolved:    {}", rfc3339(at));
        }
        let _ = writeln!(t, "  Count:       {}", a.count);
        let _ = writeln!(t, "  Description: {}", body_description(a));
        let _ = writeln!(t, "  Details:     {}", ctx.alarm_link(a));
    }
    t
}

fn html_body(n: &Notification, ctx: &RenderContext) -> String {
    let enterprise = escape_html(&single_line(&ctx.enterprise_name));
    let heading = format!("{} for {enterprise}: {}", stage_heading(n.stage), alarm_count(n.items.len()));
    let mut h = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{heading}</title></head><body>\n<h1>{heading}</h1>\n"
    );
    for a in &n.items {
        let _ = writeln!(h, "<h2>{} ({})</h2>\n<table>", escape_html(&type_name(a)), severity_name(a));
        let mut row = |name: &str, value: &str| {
            let _ = writeln!(h, "<tr><th align=\"left\">{name}</th><td>{value}</td></tr>");
        };
        row("Device", &escape_html(&ctx.device_label(a.device_id)));
        row("Enterprise", &enterprise);
        row("Severity", severity_name(a));
        row("First", &rfc3339(a.first_at));
        row("Latest", &rfc3339(a.latest_at));
        if let Some(at) = a.resolved_at {
            row("Resolved", &rfc3339(at));
        }
        row("Count", &a.count.to_string());
        row("Description", &escape_html(&body_description(a)));
        let link = escape_html(&ctx.alarm_link(a));
        row("Details", &format!("<a href=\"{link}\">{link}</a>"));
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

fn stage_heading(stage: Stage) -> &'static str {
    match stage {
        Stage::Firing => "Firing alarms",
        Stage::Repeat => "Reminder: alarms still active",
        Stage::Resolved => "Resolved alarms",
    }
}

fn alarm_count(n: usize) -> String {
    if n == 1 { "1 alarm".to_owned() } else { format!("{n} alarms") }
}

/// The type's name from the table, or `Alarm type <code>` for a code this build does not know.
fn type_name(a: &NotifiedAlarm) -> String {
    match a.code.alarm_type() {
        Some(t) => t.name.to_owned(),
        None => format!("Alarm type {}", a.code.0),
    }
}

fn severity_name(a: &NotifiedAlarm) -> &'static str {
    a.code.alarm_type().map_or("unknown", |t| t.severity.as_str())
}

fn severity_title(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Critical",
        Severity::Major => "Major",
        Severity::Minor => "Minor",
    }
}

fn body_description(a: &NotifiedAlarm) -> String {
    truncate(&single_line(&a.description), MAX_BODY_DESCRIPTION_CHARS)
}

/// `s` on one line: every control character (CR, LF, TAB, ...) becomes a space, and runs of
/// whitespace collapse to one space; leading and trailing whitespace is removed.
fn single_line(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters of `s`, ending in `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Escapes the characters that are special in HTML text and attribute values.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `t` as RFC 3339 in UTC with second precision, e.g. `2024-05-06T07:08:09Z`.
fn rfc3339(t: UnixMillis) -> String {
    let secs = t.0.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01.
///
/// Counts in 400-year eras that start on March 1st, so that the leap day ends each era's year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use fleetpulse_alarm_engine::{IdempotencyKey, StrategyId};
    use fleetpulse_proto::{AlarmTypeCode, EnterpriseId};

    use super::*;

    fn alarm(device: u64, code: u16, description: &str) -> NotifiedAlarm {
        NotifiedAlarm {
            device_id: DeviceId(device),
            code: AlarmTypeCode(code),
            first_at: UnixMillis(1_709_210_096_000),
            latest_at: UnixMillis(1_709_210_156_789),
            count: 3,
            description: description.to_owned(),
            resolved_at: None,
            key: IdempotencyKey([device as u8; 16]),
        }
    }

    fn notification(stage: Stage, items: Vec<NotifiedAlarm>) -> Notification {
        Notification {
            receiver: Receiver::Email("ops@example.com".to_owned()),
            enterprise_id: EnterpriseId(7),
            strategy_id: StrategyId(1),
            stage,
            items,
            key: IdempotencyKey([0xab; 16]),
        }
    }

    fn ctx() -> RenderContext {
        RenderContext {
            from: "fleetpulse <alarms@example.com>".parse().expect("valid mailbox"),
            portal_url: "https://portal.example.com/".to_owned(),
            enterprise_name: "Acme".to_owned(),
            device_labels: HashMap::from([(DeviceId(1), "001565aabbcc".to_owned())]),
        }
    }

    fn formatted(n: &Notification, ctx: &RenderContext) -> String {
        String::from_utf8(render(n, ctx).expect("renders").formatted()).expect("ASCII message")
    }

    /// The message's top-level header block, one entry per (unfolded) header.
    fn header_block(message: &str) -> Vec<String> {
        let (head, _) = message.split_once("\r\n\r\n").expect("a header block");
        let mut headers: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match headers.last_mut() {
                Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
                _ => headers.push(line.to_owned()),
            }
        }
        headers
    }

    #[test]
    fn subject_names_stage_severity_type_device_description_count_and_enterprise() {
        let items = vec![alarm(1, 109, "no heartbeat"), alarm(2, 301, "call failed"), alarm(3, 202, "")];
        let firing = notification(Stage::Firing, items.clone());
        assert_eq!(
            subject(&firing, &ctx()),
            "[fleetpulse] Critical: Offline on 001565aabbcc: no heartbeat (+2 more) — Acme"
        );
        let repeat = notification(Stage::Repeat, vec![alarm(2, 301, "")]);
        assert_eq!(subject(&repeat, &ctx()), "[fleetpulse] Reminder: Minor: Call failed on 2 — Acme");
        let resolved = notification(Stage::Resolved, vec![alarm(3, 999, "x")]);
        assert_eq!(subject(&resolved, &ctx()), "[fleetpulse] Resolved: Alarm: Alarm type 999 on 3: x — Acme");
    }

    #[test]
    fn html_part_escapes_device_supplied_text() {
        let mut c = ctx();
        c.device_labels.insert(DeviceId(2), "<b>dev</b>".to_owned());
        c.enterprise_name = "A&B".to_owned();
        let n = notification(Stage::Firing, vec![alarm(2, 105, "<script>alert('x')</script>")]);
        let html = html_body(&n, &c);
        assert!(!html.contains("<script>") && !html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;dev&lt;/b&gt;") && html.contains("A&amp;B"), "{html}");
    }

    #[test]
    fn device_text_cannot_add_headers() {
        let mut c = ctx();
        c.device_labels.insert(DeviceId(1), "dev\r\nBcc: evil@x".to_owned());
        c.enterprise_name = "Acme\nBcc: evil@x".to_owned();
        let n = notification(Stage::Firing, vec![alarm(1, 109, "down\r\nBcc: evil@x\r\n\r\n<b>body</b>")]);
        let message = formatted(&n, &c);
        let headers = header_block(&message);
        assert!(!headers.iter().any(|h| h.to_ascii_lowercase().starts_with("bcc")), "{headers:#?}");
        assert_eq!(headers.iter().filter(|h| h.starts_with("Subject:")).count(), 1, "{headers:#?}");
        // Not even a body line looks like a header.
        assert!(!message.split("\r\n").any(|l| l.to_ascii_lowercase().starts_with("bcc")), "{message}");
        assert!(!subject(&n, &c).contains(['\r', '\n']));
    }

    #[test]
    fn subject_is_bounded() {
        let mut c = ctx();
        c.device_labels.insert(DeviceId(1), "d".repeat(1_000));
        c.enterprise_name = "e".repeat(1_000);
        let n = notification(Stage::Repeat, vec![alarm(1, 109, &"x".repeat(10_000)), alarm(2, 101, "")]);
        let s = subject(&n, &c);
        assert!(s.chars().count() <= 60 + MAX_SUBJECT_DESCRIPTION_CHARS + 2 * MAX_SUBJECT_NAME_CHARS, "{s}");
        assert!(s.contains(&format!(": {}… (+1 more)", "x".repeat(MAX_SUBJECT_DESCRIPTION_CHARS - 1))), "{s}");
        let message = formatted(&n, &c);
        let subject_header = header_block(&message).into_iter().find(|h| h.starts_with("Subject:"));
        assert!(subject_header.is_some_and(|h| h.len() < 1_000));
    }

    #[test]
    fn message_has_text_and_html_parts_and_key_headers() {
        let n = notification(Stage::Firing, vec![alarm(1, 109, "no heartbeat")]);
        let message = formatted(&n, &ctx());
        let headers = header_block(&message);
        let key = "ab".repeat(16);
        assert!(headers.contains(&format!("Message-ID: <{key}@fleetpulse>")), "{headers:#?}");
        assert!(headers.contains(&format!("X-Fleetpulse-Key: {key}")), "{headers:#?}");
        assert!(headers.contains(&"To: ops@example.com".to_owned()), "{headers:#?}");
        assert!(headers.iter().any(|h| h.starts_with("Content-Type: multipart/alternative;")), "{headers:#?}");
        assert!(message.contains("Content-Type: text/plain; charset=utf-8"), "{message}");
        assert!(message.contains("Content-Type: text/html; charset=utf-8"), "{message}");
    }

    #[test]
    fn text_lists_every_alarm_with_times_count_and_link() {
        let mut resolved = alarm(1, 109, "no heartbeat");
        resolved.resolved_at = Some(UnixMillis(1_709_213_696_000));
        let n = notification(Stage::Resolved, vec![resolved, alarm(4, 402, "memory 95%")]);
        let text = text_body(&n, &ctx());
        for expected in [
            "Resolved alarms for Acme: 2 alarms",
            "- Offline (critical)",
            "Device:      001565aabbcc",
            "Enterprise:  Acme",
            "First:       2024-02-29T12:34:56Z",
            "Latest:      2024-02-29T12:35:56Z",
            "Resolved:    2024-02-29T13:34:56Z",
            "Count:       3",
            "Description: no heartbeat",
            "Details:     https://portal.example.com/alarms?device_id=1&code=109",
            "- High memory usage (major)",
            "Device:      4",
            "https://portal.example.com/alarms?device_id=4&code=402",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let html = html_body(&n, &ctx());
        assert!(html.contains("<a href=\"https://portal.example.com/alarms?device_id=1&amp;code=109\">"), "{html}");
    }

    #[test]
    fn invalid_receiver_is_an_address_error() {
        let mut n = notification(Stage::Firing, vec![alarm(1, 109, "")]);
        n.receiver = Receiver::Email("not an address\r\nBcc: evil@x".to_owned());
        assert!(matches!(render(&n, &ctx()), Err(MailError::Address { what: "receiver", .. })));
    }

    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(rfc3339(UnixMillis(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UnixMillis(1_709_210_096_999)), "2024-02-29T12:34:56Z");
        assert_eq!(rfc3339(UnixMillis(951_782_400_000)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UnixMillis(-1)), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(UnixMillis(253_402_300_799_000)), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn single_line_and_truncate() {
        assert_eq!(single_line(" a\r\nb\tc\u{7}d\u{1b}[0m "), "a b c d [0m");
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo!", 5), "héll…");
    }
}
