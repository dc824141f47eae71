//! Rendering a notification as an email: subject, a plain-text and an HTML part, headers.
//!
//! Everything a device supplies (descriptions, names) is untrusted: control characters are
//! removed from every value that goes into a header or a line of text, and the HTML part escapes
//! it. The `Message-ID` is derived from the notification's idempotency key, so a duplicate is
//! recognisable as one by every mail client.

use std::fmt::Write as _;

use fleetpulse_alarm_engine::IdempotencyKey;
use fleetpulse_proto::{AlarmTypeCode, Severity, UnixMillis};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use sha2::{Digest, Sha256};

use crate::MailError;
use crate::payload::{OutboxPayload, PayloadIncident, PayloadItem, PayloadStage};

/// Most characters of an alarm description shown in the subject.
pub const MAX_SUBJECT_DESCRIPTION_CHARS: usize = 80;
/// Most characters of a device label or enterprise name shown in the subject.
const MAX_SUBJECT_NAME_CHARS: usize = 64;
/// Most characters of a description in the body (descriptions come from devices).
const MAX_BODY_DESCRIPTION_CHARS: usize = 2_000;
/// Most alarms a digest lists over all its notifications; the rest are counted.
pub const MAX_DIGEST_ITEMS: usize = 200;

/// What rendering needs beyond the queued notifications.
#[derive(Clone, Debug)]
pub struct RenderContext {
    /// Sender mailbox (`From`).
    pub from: Mailbox,
    /// Base URL of the portal, e.g. `https://portal.example.com` (a trailing `/` is ignored).
    pub portal_url: String,
}

impl RenderContext {
    /// The portal page of one alarm type on one device.
    fn alarm_link(&self, alarm: &PayloadItem) -> String {
        let base = self.portal_url.trim_end_matches('/');
        format!("{base}/alarms?device_id={}&code={}", alarm.device_id, alarm.code)
    }

    /// The portal page of an enterprise's alarms.
    fn enterprise_link(&self, p: &OutboxPayload) -> String {
        let base = self.portal_url.trim_end_matches('/');
        format!("{base}/alarms?enterprise_id={}", p.enterprise_id)
    }
}

/// Renders what is queued for `receiver` as one email (`multipart/alternative`: plain text and
/// HTML): one notification as itself, several as a digest of them (what a rate limit held back).
///
/// The `Message-ID` is the notification's key, or for a digest a digest of its notifications'
/// keys, so that a message sent again after a crash is recognisable as the same.
///
/// # Errors
///
/// [`MailError::Address`] if `receiver` is not a valid mailbox, [`MailError::Message`] if there is
/// nothing to render or lettre cannot build the message.
pub fn render(receiver: &str, payloads: &[OutboxPayload], ctx: &RenderContext) -> Result<Message, MailError> {
    let to: Mailbox = receiver.parse().map_err(|source| MailError::Address {
        what: "receiver",
        address: receiver.to_owned(),
        source,
    })?;
    let key = match payloads {
        [] => return Err(MailError::Message(lettre::error::Error::MissingTo)),
        [one] => match IdempotencyKey::parse_hex(&one.key) {
            Some(key) => key.to_string(),
            None => digest_key(payloads),
        },
        many => digest_key(many),
    };
    let message = Message::builder()
        .from(ctx.from.clone())
        .to(to)
        .subject(subject(payloads))
        .message_id(Some(format!("<{key}@fleetpulse>")))
        .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Fleetpulse-Key"), key.clone()))
        .multipart(
            MultiPart::alternative()
                .boundary(format!("fleetpulse-{key}"))
                .singlepart(SinglePart::plain(text_body(payloads, ctx)))
                .singlepart(SinglePart::html(html_body(payloads, ctx))),
        )?;
    Ok(message)
}

/// 32 hex digits of the SHA-256 of the notifications' keys in order.
fn digest_key(payloads: &[OutboxPayload]) -> String {
    let mut h = Sha256::new();
    h.update(b"fleetpulse/outbox-digest/v1\0");
    for p in payloads {
        h.update((p.key.len() as u64).to_be_bytes());
        h.update(p.key.as_bytes());
    }
    h.finalize()[..16].iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One notification: `[fleetpulse] Critical: Offline on 001565aabbcc: <description> (+2 more) —
/// Acme`, with a `Reminder:` or `Resolved:` prefix for those stages. A digest:
/// `[fleetpulse] Digest: 3 notifications, 17 alarms — Acme`.
fn subject(payloads: &[OutboxPayload]) -> String {
    let mut s = String::from("[fleetpulse] ");
    let enterprise = |p: &OutboxPayload| truncate(&single_line(&p.enterprise_name), MAX_SUBJECT_NAME_CHARS);
    let [p] = payloads else {
        let alarms: u64 = payloads.iter().map(OutboxPayload::alarm_count).sum();
        let _ = write!(s, "Digest: {} notifications, {}", payloads.len(), alarm_count(alarms));
        match payloads.first() {
            Some(first) if payloads.iter().all(|p| p.enterprise_id == first.enterprise_id) => {
                let _ = write!(s, " — {}", enterprise(first));
            }
            _ => s.push_str(" — several enterprises"),
        }
        return s;
    };
    match p.stage {
        PayloadStage::Firing => {}
        PayloadStage::Repeat => s.push_str("Reminder: "),
        PayloadStage::Resolved => s.push_str("Resolved: "),
    }
    if let Some(incident) = &p.incident {
        let _ = write!(s, "{} — {}", incident_summary(incident), enterprise(p));
        return s;
    }
    let severity = p.items.iter().filter_map(|a| AlarmTypeCode(a.code).alarm_type()).map(|t| t.severity).min();
    s.push_str(severity.map_or("Alarm", severity_title));
    if let Some(first) = p.items.first() {
        let device = truncate(&single_line(&first.device_label), MAX_SUBJECT_NAME_CHARS);
        let _ = write!(s, ": {} on {device}", type_name(first));
        let description = truncate(&single_line(&first.description), MAX_SUBJECT_DESCRIPTION_CHARS);
        if !description.is_empty() {
            let _ = write!(s, ": {description}");
        }
        let more = p.alarm_count().saturating_sub(1);
        if more > 0 {
            let _ = write!(s, " (+{more} more)");
        }
    }
    let _ = write!(s, " — {}", enterprise(p));
    s
}

/// The alarms each notification lists in this email: all of one notification's, at most
/// [`MAX_DIGEST_ITEMS`] over a digest.
fn listed(payloads: &[OutboxPayload]) -> Vec<(&OutboxPayload, &[PayloadItem])> {
    let mut budget = if payloads.len() == 1 { usize::MAX } else { MAX_DIGEST_ITEMS };
    payloads
        .iter()
        .map(|p| {
            let n = p.items.len().min(budget);
            budget -= n;
            (p, &p.items[..n])
        })
        .collect()
}

fn digest_intro(payloads: &[OutboxPayload]) -> Option<String> {
    (payloads.len() > 1).then(|| {
        format!(
            "{} notifications held back by the rate limit, sent together. Alarms not listed are in the portal.",
            payloads.len()
        )
    })
}

fn text_body(payloads: &[OutboxPayload], ctx: &RenderContext) -> String {
    let mut t = String::new();
    if let Some(intro) = digest_intro(payloads) {
        let _ = writeln!(t, "{intro}\n");
    }
    for (p, items) in listed(payloads) {
        let enterprise = single_line(&p.enterprise_name);
        if let Some(incident) = &p.incident {
            let _ = writeln!(t, "{} for {enterprise}.", incident_summary(incident));
            let _ = writeln!(t, "{}", incident_details(incident, items.len()));
        } else {
            let _ = writeln!(t, "{} for {enterprise}: {}", stage_heading(p.stage), alarm_count(p.alarm_count()));
        }
        for a in items {
            let _ = writeln!(t, "\n- {} ({})", type_name(a), severity_name(a));
            let _ = writeln!(t, "  Device:      {}", single_line(&a.device_label));
            let _ = writeln!(t, "  Enterprise:  {enterprise}");
            let _ = writeln!(t, "  Severity:    {}", severity_name(a));
            let _ = writeln!(t, "  First:       {}", rfc3339(UnixMillis(a.first_at)));
            let _ = writeln!(t, "  Latest:      {}", rfc3339(UnixMillis(a.latest_at)));
            if let Some(at) = a.resolved_at {
                let _ = writeln!(t, "  Resolved:    {}", rfc3339(UnixMillis(at)));
            }
            let _ = writeln!(t, "  Count:       {}", a.count);
            let _ = writeln!(t, "  Description: {}", body_description(a));
            let _ = writeln!(t, "  Details:     {}", ctx.alarm_link(a));
        }
        let unlisted = p.alarm_count() - items.len() as u64;
        if unlisted > 0 {
            let _ = writeln!(t, "\n... and {} not listed: {}", alarm_count(unlisted), ctx.enterprise_link(p));
        }
        t.push('\n');
    }
    t
}

fn html_body(payloads: &[OutboxPayload], ctx: &RenderContext) -> String {
    let title = if payloads.len() > 1 { "fleetpulse alarm digest" } else { "fleetpulse alarm notification" };
    let mut h = format!("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\n");
    if let Some(intro) = digest_intro(payloads) {
        let _ = writeln!(h, "<p>{}</p>", escape_html(&intro));
    }
    for (p, items) in listed(payloads) {
        let enterprise = escape_html(&single_line(&p.enterprise_name));
        if let Some(incident) = &p.incident {
            let _ = writeln!(h, "<h1>{} for {enterprise}</h1>", escape_html(&incident_summary(incident)));
            let _ = writeln!(h, "<p>{}</p>", escape_html(&incident_details(incident, items.len())));
        } else {
            let _ =
                writeln!(h, "<h1>{} for {enterprise}: {}</h1>", stage_heading(p.stage), alarm_count(p.alarm_count()));
        }
        for a in items {
            let _ = writeln!(h, "<h2>{} ({})</h2>\n<table>", escape_html(&type_name(a)), severity_name(a));
            let mut row = |name: &str, value: &str| {
                let _ = writeln!(h, "<tr><th align=\"left\">{name}</th><td>{value}</td></tr>");
            };
            row("Device", &escape_html(&single_line(&a.device_label)));
            row("Enterprise", &enterprise);
            row("Severity", severity_name(a));
            row("First", &rfc3339(UnixMillis(a.first_at)));
            row("Latest", &rfc3339(UnixMillis(a.latest_at)));
            if let Some(at) = a.resolved_at {
                row("Resolved", &rfc3339(UnixMillis(at)));
            }
            row("Count", &a.count.to_string());
            row("Description", &escape_html(&body_description(a)));
            let link = escape_html(&ctx.alarm_link(a));
            row("Details", &format!("<a href=\"{link}\">{link}</a>"));
            h.push_str("</table>\n");
        }
        let unlisted = p.alarm_count() - items.len() as u64;
        if unlisted > 0 {
            let link = escape_html(&ctx.enterprise_link(p));
            let _ = writeln!(h, "<p>… and {} not listed: <a href=\"{link}\">{link}</a></p>", alarm_count(unlisted));
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// `Incident: 12 of 40 devices at site Berlin-3: Offline`, or when resolved
/// `Incident resolved: 11 of 12 devices back at site Berlin-3: Offline`.
fn incident_summary(i: &PayloadIncident) -> String {
    let site = truncate(&single_line(&i.site_name), MAX_SUBJECT_NAME_CHARS);
    let ty = AlarmTypeCode(i.code).alarm_type().map_or_else(|| format!("Alarm type {}", i.code), |t| t.name.to_owned());
    match i.resolved_at {
        Some(_) => format!("Incident resolved: {} of {} devices back at site {site}: {ty}", i.back, i.affected),
        None => format!("Incident: {} of {} devices at site {site}: {ty}", i.affected, i.site_devices),
    }
}

/// When it opened (and resolved), how many are back, and how many devices are listed.
fn incident_details(i: &PayloadIncident, listed: usize) -> String {
    let mut s = format!("Opened {}", rfc3339(UnixMillis(i.opened_at)));
    if let Some(at) = i.resolved_at {
        let _ = write!(s, ", resolved {}", rfc3339(UnixMillis(at)));
    }
    let _ = write!(s, "; {} of {} back. The alarms of {listed} of its devices are listed.", i.back, i.affected);
    s
}

fn stage_heading(stage: PayloadStage) -> &'static str {
    match stage {
        PayloadStage::Firing => "Firing alarms",
        PayloadStage::Repeat => "Reminder: alarms still active",
        PayloadStage::Resolved => "Resolved alarms",
    }
}

fn alarm_count(n: u64) -> String {
    if n == 1 { "1 alarm".to_owned() } else { format!("{n} alarms") }
}

/// The type's name from the table, or `Alarm type <code>` for a code this build does not know.
fn type_name(a: &PayloadItem) -> String {
    match AlarmTypeCode(a.code).alarm_type() {
        Some(t) => t.name.to_owned(),
        None => format!("Alarm type {}", a.code),
    }
}

fn severity_name(a: &PayloadItem) -> &'static str {
    AlarmTypeCode(a.code).alarm_type().map_or("unknown", |t| t.severity.as_str())
}

fn severity_title(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Critical",
        Severity::Major => "Major",
        Severity::Minor => "Minor",
    }
}

fn body_description(a: &PayloadItem) -> String {
    truncate(&single_line(&a.description), MAX_BODY_DESCRIPTION_CHARS)
}

/// `s` on one line: every control character (CR, LF, TAB, ...) becomes a space, and runs of
/// whitespace collapse to one space; leading and trailing whitespace is removed.
pub(crate) fn single_line(s: &str) -> String {
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
pub(crate) fn escape_html(s: &str) -> String {
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
pub(crate) fn rfc3339(t: UnixMillis) -> String {
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
    use fleetpulse_proto::{DeviceId, EnterpriseId, StrategyId};

    use super::*;

    fn alarm(device: u64, code: u16, description: &str) -> PayloadItem {
        PayloadItem {
            device_id: DeviceId(device),
            device_label: if device == 1 { "001565aabbcc".to_owned() } else { device.to_string() },
            code,
            first_at: 1_709_210_096_000,
            latest_at: 1_709_210_156_789,
            count: 3,
            description: description.to_owned(),
            resolved_at: None,
            key: format!("{device:02x}").repeat(16),
        }
    }

    fn payload(stage: PayloadStage, items: Vec<PayloadItem>) -> OutboxPayload {
        OutboxPayload {
            version: 1,
            stage,
            enterprise_id: EnterpriseId(7),
            enterprise_name: "Acme".to_owned(),
            strategy_id: StrategyId(1),
            key: "ab".repeat(16),
            items,
            omitted: 0,
            incident: None,
        }
    }

    fn ctx() -> RenderContext {
        RenderContext {
            from: "fleetpulse <alarms@example.com>".parse().expect("valid mailbox"),
            portal_url: "https://portal.example.com/".to_owned(),
        }
    }

    fn formatted(payloads: &[OutboxPayload]) -> String {
        let message = render("ops@example.com", payloads, &ctx()).expect("renders");
        String::from_utf8(message.formatted()).expect("ASCII message")
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
        let firing = payload(PayloadStage::Firing, items);
        assert_eq!(subject(&[firing]), "[fleetpulse] Critical: Offline on 001565aabbcc: no heartbeat (+2 more) — Acme");
        let repeat = payload(PayloadStage::Repeat, vec![alarm(2, 301, "")]);
        assert_eq!(subject(&[repeat]), "[fleetpulse] Reminder: Minor: Call failed on 2 — Acme");
        let mut resolved = payload(PayloadStage::Resolved, vec![alarm(3, 999, "x")]);
        resolved.omitted = 4;
        assert_eq!(subject(&[resolved]), "[fleetpulse] Resolved: Alarm: Alarm type 999 on 3: x (+4 more) — Acme");
    }

    #[test]
    fn an_incident_names_its_site_counts_and_type() {
        let mut p = payload(PayloadStage::Firing, vec![alarm(1, 109, "no heartbeat"), alarm(2, 109, "")]);
        p.omitted = 10;
        p.incident = Some(PayloadIncident {
            site_name: "Berlin-3\r\nBcc: x".into(),
            code: 109,
            opened_at: 0,
            site_devices: 40,
            affected: 12,
            back: 0,
            resolved_at: None,
        });
        assert_eq!(
            subject(std::slice::from_ref(&p)),
            "[fleetpulse] Incident: 12 of 40 devices at site Berlin-3 Bcc: x: Offline — Acme"
        );
        let text = text_body(std::slice::from_ref(&p), &ctx());
        assert!(
            text.contains("Opened 1970-01-01T00:00:00Z; 0 of 12 back. The alarms of 2 of its devices are listed."),
            "{text}"
        );
        assert!(text.contains("... and 10 alarms not listed"), "{text}");
        p.stage = PayloadStage::Resolved;
        p.incident = p.incident.map(|i| PayloadIncident { back: 11, resolved_at: Some(60_000), ..i });
        assert_eq!(
            subject(std::slice::from_ref(&p)),
            "[fleetpulse] Resolved: Incident resolved: 11 of 12 devices back at site Berlin-3 Bcc: x: Offline — Acme"
        );
        let html = html_body(std::slice::from_ref(&p), &ctx());
        assert!(html.contains("resolved 1970-01-01T00:01:00Z"), "{html}");
    }

    #[test]
    fn html_part_escapes_device_supplied_text() {
        let mut item = alarm(2, 105, "<script>alert('x')</script>");
        item.device_label = "<b>dev</b>".to_owned();
        let mut p = payload(PayloadStage::Firing, vec![item]);
        p.enterprise_name = "A&B".to_owned();
        let html = html_body(&[p], &ctx());
        assert!(!html.contains("<script>") && !html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;dev&lt;/b&gt;") && html.contains("A&amp;B"), "{html}");
    }

    #[test]
    fn device_text_cannot_add_headers() {
        let mut item = alarm(1, 109, "down\r\nBcc: evil@x\r\n\r\n<b>body</b>");
        item.device_label = "dev\r\nBcc: evil@x".to_owned();
        let mut p = payload(PayloadStage::Firing, vec![item]);
        p.enterprise_name = "Acme\nBcc: evil@x".to_owned();
        p.key = "x\r\nBcc: evil@x".to_owned();
        let message = formatted(&[p.clone()]);
        let headers = header_block(&message);
        assert!(!headers.iter().any(|h| h.to_ascii_lowercase().starts_with("bcc")), "{headers:#?}");
        assert_eq!(headers.iter().filter(|h| h.starts_with("Subject:")).count(), 1, "{headers:#?}");
        // Not even a body line looks like a header.
        assert!(!message.split("\r\n").any(|l| l.to_ascii_lowercase().starts_with("bcc")), "{message}");
        assert!(!subject(&[p]).contains(['\r', '\n']));
    }

    #[test]
    fn subject_is_bounded() {
        let mut first = alarm(1, 109, &"x".repeat(10_000));
        first.device_label = "d".repeat(1_000);
        let mut p = payload(PayloadStage::Repeat, vec![first, alarm(2, 101, "")]);
        p.enterprise_name = "e".repeat(1_000);
        let s = subject(std::slice::from_ref(&p));
        assert!(s.chars().count() <= 60 + MAX_SUBJECT_DESCRIPTION_CHARS + 2 * MAX_SUBJECT_NAME_CHARS, "{s}");
        assert!(s.contains(&format!(": {}… (+1 more)", "x".repeat(MAX_SUBJECT_DESCRIPTION_CHARS - 1))), "{s}");
        let message = formatted(&[p]);
        let subject_header = header_block(&message).into_iter().find(|h| h.starts_with("Subject:"));
        assert!(subject_header.is_some_and(|h| h.len() < 1_000));
    }

    #[test]
    fn message_has_text_and_html_parts_and_key_headers() {
        let message = formatted(&[payload(PayloadStage::Firing, vec![alarm(1, 109, "no heartbeat")])]);
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
        resolved.resolved_at = Some(1_709_213_696_000);
        let p = payload(PayloadStage::Resolved, vec![resolved, alarm(4, 402, "memory 95%")]);
        let text = text_body(std::slice::from_ref(&p), &ctx());
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
        let html = html_body(&[p], &ctx());
        assert!(html.contains("<a href=\"https://portal.example.com/alarms?device_id=1&amp;code=109\">"), "{html}");
    }

    #[test]
    fn a_digest_merges_notifications_lists_a_bounded_number_and_counts_the_rest() {
        let many: Vec<PayloadItem> = (1..=150).map(|d| alarm(d, 105, "crash")).collect();
        let mut first = payload(PayloadStage::Firing, many.clone());
        first.omitted = 10;
        let mut second = payload(PayloadStage::Firing, many);
        second.key = "cd".repeat(16);
        let third = payload(PayloadStage::Resolved, vec![alarm(1, 109, "back")]);
        let payloads = [first, second, third];
        assert_eq!(subject(&payloads), "[fleetpulse] Digest: 3 notifications, 311 alarms — Acme");
        let text = text_body(&payloads, &ctx());
        assert!(text.starts_with("3 notifications held back by the rate limit"), "{text}");
        assert_eq!(text.matches("\n- Application crash").count(), MAX_DIGEST_ITEMS, "{text}");
        assert!(text.contains("... and 10 alarms not listed: https://portal.example.com/alarms?enterprise_id=7"));
        assert!(text.contains("... and 100 alarms not listed"), "{text}");
        assert!(text.contains("Resolved alarms for Acme: 1 alarm\n\n... and 1 alarm not listed"), "{text}");
        let message = formatted(&payloads);
        let digest = digest_key(&payloads);
        assert_ne!(digest, "ab".repeat(16));
        assert!(header_block(&message).contains(&format!("Message-ID: <{digest}@fleetpulse>")));
        // The same notifications give the same digest (a resend after a crash is recognisable).
        assert_eq!(digest_key(&payloads), digest);
        let mut other = payloads.clone();
        other[2].enterprise_id = EnterpriseId(8);
        assert!(subject(&other).ends_with("— several enterprises"));
    }

    #[test]
    fn invalid_receiver_is_an_address_error() {
        let p = payload(PayloadStage::Firing, vec![alarm(1, 109, "")]);
        let result = render("not an address\r\nBcc: evil@x", &[p], &ctx());
        assert!(matches!(result, Err(MailError::Address { what: "receiver", .. })));
        assert!(render("ops@example.com", &[], &ctx()).is_err());
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
