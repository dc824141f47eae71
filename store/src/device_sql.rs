//! The SQL of [`crate::DeviceStore::query_devices`], shared by the embedded (SQLite) and the
//! PostgreSQL backends: the same filters, sort expressions and keyset condition, written for
//! each dialect. Values are always bound, never spliced into the text.

use crate::{DeviceCursor, DeviceQuery, DeviceSortColumn, DeviceSortKey};

/// A value to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    /// An integer.
    Int(i64),
    /// A text.
    Text(String),
    /// A list of ids (SQLite: a JSON array read by `json_each`; PostgreSQL: `bigint[]`).
    Ids(Vec<i64>),
}

/// The SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite: `?` placeholders.
    Sqlite,
    /// PostgreSQL: `$n` placeholders, `COLLATE "C"` on text sort keys (byte order, as SQLite).
    Postgres,
}

/// Builds a statement: text and the values of its placeholders, in order.
#[derive(Debug)]
pub(crate) struct Built {
    /// The SQL.
    pub(crate) sql: String,
    /// Values, in placeholder order.
    pub(crate) args: Vec<Arg>,
    dialect: Dialect,
}

impl Built {
    fn new(dialect: Dialect) -> Built {
        Built { sql: String::new(), args: Vec::new(), dialect }
    }

    /// Appends a placeholder bound to `arg`.
    fn bind(&mut self, arg: Arg) {
        let list = matches!(arg, Arg::Ids(_));
        self.args.push(arg);
        match (self.dialect, list) {
            (Dialect::Sqlite, false) => self.sql.push('?'),
            (Dialect::Sqlite, true) => self.sql.push_str("(SELECT value FROM json_each(?))"),
            (Dialect::Postgres, false) => self.sql.push_str(&format!("${}", self.args.len())),
            (Dialect::Postgres, true) => self.sql.push_str(&format!("(SELECT unnest(${}::bigint[]))", self.args.len())),
        }
    }

    fn push(&mut self, s: &str) {
        self.sql.push_str(s);
    }
}

/// The sort expression of a column over `devices d` (as indexed by the migrations).
pub(crate) fn sort_expr(column: DeviceSortColumn, dialect: Dialect) -> &'static str {
    match (column, dialect) {
        (DeviceSortColumn::Mac, Dialect::Sqlite) => "COALESCE(d.mac, '')",
        (DeviceSortColumn::Mac, Dialect::Postgres) => "(COALESCE(d.mac, '') COLLATE \"C\")",
        (DeviceSortColumn::Name, Dialect::Sqlite) => "d.name",
        (DeviceSortColumn::Name, Dialect::Postgres) => "(d.name COLLATE \"C\")",
        (DeviceSortColumn::Model, Dialect::Sqlite) => "d.model",
        (DeviceSortColumn::Model, Dialect::Postgres) => "(d.model COLLATE \"C\")",
        (DeviceSortColumn::Firmware, Dialect::Sqlite) => "d.firmware",
        (DeviceSortColumn::Firmware, Dialect::Postgres) => "(d.firmware COLLATE \"C\")",
        (DeviceSortColumn::PublicIp, Dialect::Sqlite) => "d.public_ip",
        (DeviceSortColumn::PublicIp, Dialect::Postgres) => "(d.public_ip COLLATE \"C\")",
        (DeviceSortColumn::PrivateIp, Dialect::Sqlite) => "d.private_ip",
        (DeviceSortColumn::PrivateIp, Dialect::Postgres) => "(d.private_ip COLLATE \"C\")",
        (DeviceSortColumn::Online, _) => "d.online",
        (DeviceSortColumn::LastReportAt, _) => "d.last_report_at",
        (DeviceSortColumn::Enterprise, _) => "d.enterprise_id",
        (DeviceSortColumn::Created, _) => "d.created_at",
    }
}

fn ids<T>(list: &[T], id: impl Fn(&T) -> u64) -> Vec<i64> {
    // `DeviceQuery::validate` refused ids beyond i64.
    list.iter().map(|x| i64::try_from(id(x)).unwrap_or(i64::MAX)).collect()
}

/// Appends ` AND <term>` for every filter of the query.
fn push_filters(b: &mut Built, q: &DeviceQuery) {
    match q.enterprises.as_deref() {
        // One enterprise (an enterprise admin's list, an export) is bound with `=`: a list
        // bound as a set hides from the planner that the rows come from one enterprise, so it
        // sorted all of that enterprise's devices for every page instead of walking the index
        // (enterprise_id, created_at, id) from the cursor (110 pages of 1,000: 11 s against
        // 0.5 s).
        Some([one]) => {
            b.push(" AND d.enterprise_id = ");
            b.bind(Arg::Int(i64::try_from(one.0).unwrap_or(-1)));
        }
        Some(e) => {
            b.push(" AND d.enterprise_id IN ");
            b.bind(Arg::Ids(ids(e, |e| e.0)));
        }
        None => {}
    }
    if let Some(c) = &q.channels {
        b.push(" AND d.enterprise_id IN (SELECT id FROM enterprises WHERE channel_id IN ");
        b.bind(Arg::Ids(ids(c, |c| c.0)));
        b.push(")");
    }
    if let Some(s) = &q.sites {
        // The sites and their descendants (the tree is acyclic and at most 16 deep; UNION
        // would stop a cycle anyway).
        b.push(" AND d.site_id IN (WITH RECURSIVE sub(id) AS (SELECT id FROM sites WHERE id IN ");
        b.bind(Arg::Ids(ids(s, |s| s.0)));
        b.push(" UNION SELECT s.id FROM sites s JOIN sub ON s.parent_id = sub.id) SELECT id FROM sub)");
    }
    if let Some(g) = q.group {
        // The index (group_id, device_id) answers it.
        b.push(" AND d.id IN (SELECT device_id FROM group_members WHERE group_id = ");
        b.bind(Arg::Int(i64::try_from(g.0).unwrap_or(-1)));
        b.push(")");
    }
    if let Some(t) = q.device_type {
        b.push(" AND d.device_type = ");
        b.bind(Arg::Text(t.as_str().into()));
    }
    if let Some(o) = q.online {
        b.push(" AND d.online = ");
        b.bind(Arg::Int(i64::from(o)));
    }
    if let Some(l) = q.licence {
        // The index (enterprise_id, licence, id) answers it within enterprises.
        b.push(" AND d.licence = ");
        b.bind(Arg::Text(l.as_str().into()));
    }
    if let Some(s) = q.sip_status {
        b.push(" AND d.sip_status = ");
        b.bind(Arg::Text(sip_name(s).into()));
    }
    if let Some(m) = &q.model {
        b.push(" AND d.model = ");
        b.bind(Arg::Text(m.clone()));
    }
    if let Some(f) = &q.firmware {
        b.push(" AND d.firmware = ");
        b.bind(Arg::Text(f.clone()));
    }
    for (column, prefix) in [("d.public_ip", &q.public_ip), ("d.private_ip", &q.private_ip)] {
        if let Some(p) = prefix {
            // Validated: hex digits, '.' and ':' only; addresses are stored in lower case.
            b.push(&format!(" AND {column} LIKE "));
            b.bind(Arg::Text(format!("{}%", p.to_ascii_lowercase())));
        }
    }
    if let Some(t) = q.reported_from {
        b.push(" AND d.last_report_at >= ");
        b.bind(Arg::Int(t.0));
    }
    if let Some(t) = q.reported_to {
        b.push(" AND d.last_report_at < ");
        b.bind(Arg::Int(t.0));
    }
    if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
        // `search` is MAC, name, serial and model in lower case joined by U+001F, which `q` never
        // holds (validated), so a match lies within one field. SQLite finds the ids by scanning
        // the column's index (smaller than the table); PostgreSQL scans the stored column.
        match b.dialect {
            Dialect::Sqlite => {
                let needle = Arg::Text(text.to_ascii_lowercase());
                // INDEXED BY: the planner would scan the table and compute the column per row
                // (about 4 times slower at 100,000 devices).
                b.push(" AND d.id IN (SELECT id FROM devices INDEXED BY devices_search WHERE instr(search, ");
                b.bind(needle);
                b.push(") > 0)");
            }
            Dialect::Postgres => {
                // LIKE '%…%' (the needle's wildcards escaped) is what the pg_trgm index
                // `devices_search_trgm` answers; without the extension it scans.
                b.push(" AND d.search LIKE ");
                b.bind(Arg::Text(format!("%{}%", like_escape(&text.to_ascii_lowercase()))));
            }
        }
    }
}

/// `text` with PostgreSQL's `LIKE` wildcards (`%`, `_`) and its escape character (`\\`) escaped,
/// so it matches itself only.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The stored name of a SIP summary.
pub(crate) fn sip_name(s: fleetpulse_proto::domain::SipSummary) -> &'static str {
    use fleetpulse_proto::domain::SipSummary;
    match s {
        SipSummary::Registered => "registered",
        SipSummary::Partial => "partial",
        SipSummary::Unregistered => "unregistered",
        SipSummary::Unknown => "unknown",
    }
}

/// The SIP summary of a stored name (unknown names read as `Unknown`).
pub(crate) fn parse_sip(s: &str) -> fleetpulse_proto::domain::SipSummary {
    use fleetpulse_proto::domain::SipSummary;
    match s {
        "registered" => SipSummary::Registered,
        "partial" => SipSummary::Partial,
        "unregistered" => SipSummary::Unregistered,
        _ => SipSummary::Unknown,
    }
}

/// The stored name of a call status.
pub(crate) fn call_name(c: fleetpulse_proto::domain::CallStatus) -> &'static str {
    match c {
        fleetpulse_proto::domain::CallStatus::Idle => "idle",
        fleetpulse_proto::domain::CallStatus::InCall => "in_call",
    }
}

/// The call status of a stored name.
pub(crate) fn parse_call(s: &str) -> Option<fleetpulse_proto::domain::CallStatus> {
    match s {
        "idle" => Some(fleetpulse_proto::domain::CallStatus::Idle),
        "in_call" => Some(fleetpulse_proto::domain::CallStatus::InCall),
        _ => None,
    }
}

/// The columns every device summary query selects, in the order the row mappers read them.
pub(crate) const SUMMARY_COLUMNS: &str = "d.id, d.enterprise_id, d.mac, d.serial, d.model, d.firmware, d.name, \
     d.created_at, e.name, e.channel_id, d.device_type, d.online, d.sip_status, d.call_status, d.public_ip, \
     d.private_ip, d.last_report_at, d.uptime_s, d.last_reboot, d.sip_lines, d.site_id, \
     (SELECT s.name FROM sites s WHERE s.id = d.site_id)";

/// `SELECT count(*)` of the query's matches (no cursor).
pub(crate) fn count_sql(q: &DeviceQuery, dialect: Dialect) -> Built {
    let mut b = Built::new(dialect);
    b.push("SELECT count(*) FROM devices d WHERE 1 = 1");
    push_filters(&mut b, q);
    b
}

/// Counts of the query's matches by device type: rows of (type, devices, online devices).
pub(crate) fn by_type_sql(q: &DeviceQuery, dialect: Dialect) -> Built {
    let mut b = Built::new(dialect);
    b.push("SELECT d.device_type, count(*), COALESCE(sum(d.online), 0) FROM devices d WHERE 1 = 1");
    push_filters(&mut b, q);
    b.push(" GROUP BY d.device_type");
    b
}

/// Counts of the query's matches by model, the most common first: rows of (model, devices,
/// online devices), at most `limit`.
pub(crate) fn by_model_sql(q: &DeviceQuery, limit: u32, dialect: Dialect) -> Built {
    let mut b = Built::new(dialect);
    b.push("SELECT d.model, count(*) AS n, COALESCE(sum(d.online), 0) FROM devices d WHERE 1 = 1");
    push_filters(&mut b, q);
    b.push(&format!(
        " GROUP BY d.model ORDER BY n DESC, d.model{} LIMIT ",
        if dialect == Dialect::Postgres { " COLLATE \"C\"" } else { "" }
    ));
    b.bind(Arg::Int(i64::from(limit)));
    b
}

/// Counts of the query's matches by device group (PRV-2), the most members first: rows of
/// (group id, name, devices, online devices), at most `limit`. Reads memberships by the
/// `group_members` primary key (device, group) from the matching devices.
pub(crate) fn by_group_sql(q: &DeviceQuery, limit: u32, dialect: Dialect) -> Built {
    let mut b = Built::new(dialect);
    b.push(
        "SELECT g.id, g.name, count(*) AS n, COALESCE(sum(d.online), 0) FROM devices d \
         JOIN group_members m ON m.device_id = d.id JOIN device_groups g ON g.id = m.group_id WHERE 1 = 1",
    );
    push_filters(&mut b, q);
    b.push(" GROUP BY g.id, g.name ORDER BY n DESC, g.id LIMIT ");
    b.bind(Arg::Int(i64::from(limit)));
    b
}

/// The ids of the query's matches in id order, at most `limit` (a bulk edit's targets).
pub(crate) fn ids_sql(q: &DeviceQuery, limit: u64, dialect: Dialect) -> Built {
    let mut b = Built::new(dialect);
    b.push("SELECT d.id FROM devices d WHERE 1 = 1");
    push_filters(&mut b, q);
    b.push(" ORDER BY d.id LIMIT ");
    b.bind(Arg::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    b
}

/// The page: `limit` rows after `cursor`, in the query's order.
pub(crate) fn page_sql(q: &DeviceQuery, cursor: Option<&DeviceCursor>, limit: u32, dialect: Dialect) -> Built {
    let mut b = Built::new(dialect);
    b.push(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM devices d JOIN enterprises e ON e.id = d.enterprise_id WHERE 1 = 1"
    ));
    push_filters(&mut b, q);
    let key = sort_expr(q.sort, dialect);
    if let Some(c) = cursor {
        b.push(&format!(" AND ({key}, d.id) {} (", if q.descending { "<" } else { ">" }));
        match &c.key {
            DeviceSortKey::Int(i) => b.bind(Arg::Int(*i)),
            DeviceSortKey::Text(t) => b.bind(Arg::Text(t.clone())),
        }
        b.push(", ");
        b.bind(Arg::Int(i64::try_from(c.id.0).unwrap_or(i64::MAX)));
        b.push(")");
    }
    let dir = if q.descending { "DESC" } else { "ASC" };
    b.push(&format!(" ORDER BY {key} {dir}, d.id {dir} LIMIT "));
    b.bind(Arg::Int(i64::from(limit)));
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::EnterpriseId;

    #[test]
    fn placeholders_follow_the_dialect_and_values_are_bound() {
        let q = DeviceQuery {
            enterprises: Some(vec![EnterpriseId(3), EnterpriseId(4)]),
            q: Some("50%_".into()),
            sort: DeviceSortColumn::Name,
            descending: true,
            ..DeviceQuery::default()
        };
        let cursor = DeviceCursor {
            sort: DeviceSortColumn::Name,
            descending: true,
            key: DeviceSortKey::Text("x".into()),
            id: fleetpulse_proto::DeviceId(9),
        };
        let lite = page_sql(&q, Some(&cursor), 10, Dialect::Sqlite);
        assert!(lite.sql.contains("json_each(?)") && lite.sql.contains("(d.name, d.id) < (?, ?)"), "{}", lite.sql);
        assert_eq!(lite.args[1], Arg::Text("50%_".into()));
        let pg = page_sql(&q, Some(&cursor), 10, Dialect::Postgres);
        assert!(pg.sql.contains("$1::bigint[]") && pg.sql.contains("LIMIT $5"), "{}", pg.sql);
        assert!(!pg.sql.contains("50%"), "values are never spliced");
        assert!(pg.sql.contains("d.search LIKE $2"), "{}", pg.sql);
        assert_eq!(pg.args[1], Arg::Text("%50\\%\\_%".into()), "wildcards escaped, then wrapped");
    }

    #[test]
    fn one_enterprise_is_bound_with_equals_so_its_index_gives_the_order() {
        let q = DeviceQuery { enterprises: Some(vec![EnterpriseId(3)]), ..DeviceQuery::default() };
        let lite = page_sql(&q, None, 10, Dialect::Sqlite);
        assert!(lite.sql.contains("d.enterprise_id = ?") && !lite.sql.contains("json_each"), "{}", lite.sql);
        assert_eq!(lite.args[0], Arg::Int(3));
        let pg = page_sql(&q, None, 10, Dialect::Postgres);
        assert!(pg.sql.contains("d.enterprise_id = $1") && !pg.sql.contains("bigint[]"), "{}", pg.sql);
    }

    #[test]
    fn like_escapes_its_wildcards_and_escape_character() {
        assert_eq!(like_escape("a%b_c\\d"), "a\\%b\\_c\\\\d");
        assert_eq!(like_escape("0015650abc"), "0015650abc");
    }
}
