//! The site CSV of an import (sans-I/O): header names case-insensitive in any order, separator
//! `,` `;` or tab (the most frequent in the header), at most [`MAX_ROWS`] rows; `subnets` in the
//! guide's JSON (`{"public-subnet-list":[{"ip-address":..,"mask-length":..,
//! "private-subnet-list":[..]}]}`) or the short form `20.1.0.0/16>10.0.0.0/8|10.33.0.0/16;
//! 20.2.0.0/16` (public subnets split by `;`, each with its private subnets after `>`).

use fleetpulse_store::{Cidr, MAX_SITES, SiteSubnet};

/// Most data rows of one import (the sites limit).
pub(crate) const MAX_ROWS: u64 = MAX_SITES as u64;

/// A valid row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SiteRow {
    pub(crate) line: u64,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) location: String,
    pub(crate) parent_name: Option<String>,
    pub(crate) subnets: Vec<SiteSubnet>,
}

/// A refused row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowError {
    pub(crate) line: u64,
    pub(crate) column: String,
    pub(crate) reason: String,
}

fn detect_separator(header: &[u8]) -> u8 {
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&s| (header.iter().filter(|&&b| b == s).count(), s == b','))
        .unwrap_or(b',')
}

/// The rows of the file, or why the file as a whole is refused (no header, a required column
/// missing, too many rows).
pub(crate) fn read(bytes: &[u8]) -> Result<Vec<Result<SiteRow, RowError>>, String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(detect_separator(first_line))
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes);
    let headers = reader.byte_headers().map_err(|e| format!("the header cannot be read: {e}"))?.clone();
    let names: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(h).trim().to_ascii_lowercase()).collect();
    let col = |n: &str| names.iter().position(|h| h == n);
    let (Some(name_col), Some(subnets_col)) = (col("site_name"), col("subnets")) else {
        return Err(
            "the header must name site_name and subnets (description, location_name and parent_name are optional)"
                .into(),
        );
    };
    let (description_col, location_col, parent_col) = (col("description"), col("location_name"), col("parent_name"));
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(format!("the file cannot be read past line {}: {e}", rows.len() + 2)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(rows.len() as u64 + 2);
        if rows.len() as u64 >= MAX_ROWS {
            return Err(format!("a site import has at most {MAX_ROWS} rows"));
        }
        rows.push(row(&record, line, &names, name_col, subnets_col, description_col, location_col, parent_col));
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn row(
    record: &csv::ByteRecord,
    line: u64,
    names: &[String],
    name_col: usize,
    subnets_col: usize,
    description_col: Option<usize>,
    location_col: Option<usize>,
    parent_col: Option<usize>,
) -> Result<SiteRow, RowError> {
    let error = |column: &str, reason: String| RowError { line, column: column.into(), reason };
    if record.len() != names.len() {
        return Err(error("", format!("{} fields where the header has {}", record.len(), names.len())));
    }
    let text = |i: Option<usize>, column: &str| -> Result<String, RowError> {
        let Some(i) = i else { return Ok(String::new()) };
        let raw = record.get(i).unwrap_or_default();
        std::str::from_utf8(raw).map(|s| s.trim().to_owned()).map_err(|_| error(column, "not UTF-8 text".into()))
    };
    let name = text(Some(name_col), "site_name")?;
    if name.is_empty() {
        return Err(error("site_name", "site_name is required".into()));
    }
    let subnets = parse_subnets(&text(Some(subnets_col), "subnets")?).map_err(|r| error("subnets", r))?;
    let parent = text(parent_col, "parent_name")?;
    Ok(SiteRow {
        line,
        name,
        description: text(description_col, "description")?,
        location: text(location_col, "location_name")?,
        parent_name: (!parent.is_empty()).then_some(parent),
        subnets,
    })
}

fn cidr(s: &str) -> Result<Cidr, String> {
    s.parse::<Cidr>().map_err(|e| e.to_string().trim_start_matches("invalid input: ").to_owned())
}

/// `{"ip-address": "..", "mask-length": ".." or n}` → a network.
fn json_cidr(v: &serde_json::Value) -> Result<Cidr, String> {
    let addr = v.get("ip-address").and_then(|a| a.as_str()).ok_or("a subnet lacks \"ip-address\"")?;
    let len = match v.get("mask-length") {
        Some(serde_json::Value::String(s)) => s.trim().to_owned(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(format!("subnet {addr:?} lacks \"mask-length\"")),
    };
    cidr(&format!("{}/{len}", addr.trim()))
}

/// The `subnets` cell in either form; empty: no subnets.
pub(crate) fn parse_subnets(cell: &str) -> Result<Vec<SiteSubnet>, String> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(Vec::new());
    }
    if cell.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(cell).map_err(|e| format!("subnets is not valid JSON: {e}"))?;
        let list =
            v.get("public-subnet-list").and_then(|l| l.as_array()).ok_or("subnets lacks \"public-subnet-list\"")?;
        return list
            .iter()
            .map(|p| {
                let private = match p.get("private-subnet-list") {
                    None | Some(serde_json::Value::Null) => Vec::new(),
                    Some(serde_json::Value::Array(a)) => a.iter().map(json_cidr).collect::<Result<_, _>>()?,
                    Some(_) => return Err("\"private-subnet-list\" must be a list".to_owned()),
                };
                Ok(SiteSubnet { public: json_cidr(p)?, private })
            })
            .collect();
    }
    cell.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (public, private) = part.split_once('>').unwrap_or((part, ""));
            Ok(SiteSubnet {
                public: cidr(public)?,
                private: private
                    .split('|')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(cidr)
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_subnet_forms() {
        let short = parse_subnets("20.1.0.0/16>10.0.0.0/8|10.33.24.0/24; 2001:db8::/32").expect("short form");
        assert_eq!(short.len(), 2);
        assert_eq!(short[0].private.len(), 2);
        let json = r#"{"public-subnet-list":[{"ip-address":"1.2.3.4","mask-length":"32","private-subnet-list":
            [{"ip-address":"172.21.120.0","mask-length":28},{"ip-address":"192.168.1.0","mask-length":"28"}]},
            {"ip-address":"2.3.4.5","mask-length":"32"}]}"#;
        let parsed = parse_subnets(json).expect("guide form");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].private[1].to_string(), "192.168.1.0/28");
        let bad = r#"{"public-subnet-list":[{"ip-address":"172.21.120.1","mask-length":"28"}]}"#;
        assert!(parse_subnets(bad).expect_err("host bits").contains("172.21.120.0/28"));
        assert!(parse_subnets("10.0.0.0/33").expect_err("length").contains("beyond 32"));
        assert!(parse_subnets("{").expect_err("json").contains("not valid JSON"));
    }

    #[test]
    fn rows_are_read_and_refused_one_by_one() {
        let file = "Site_Name;Subnets;Location_Name;Parent_Name\n\
                    HQ;20.1.0.0/16>10.0.0.0/8;Berlin;\n\
                    ;20.2.0.0/16;;\n\
                    Lab;20.3.0.0/33;;HQ\n\
                    Short;1.0.0.0/8\n\
                    Floor;20.1.0.0/16>10.33.24.0/24;Berlin;HQ\n";
        let rows = read(file.as_bytes()).expect("a file");
        assert_eq!(rows.len(), 5);
        let ok = rows[0].as_ref().expect("HQ");
        assert_eq!((ok.name.as_str(), ok.location.as_str(), ok.parent_name.as_deref()), ("HQ", "Berlin", None));
        assert_eq!(rows[1].as_ref().expect_err("no name").column, "site_name");
        let bad = rows[2].as_ref().expect_err("bad subnet");
        assert_eq!((bad.line, bad.column.as_str()), (4, "subnets"));
        assert!(rows[3].as_ref().expect_err("short row").reason.contains("2 fields"));
        assert_eq!(rows[4].as_ref().expect("floor").parent_name.as_deref(), Some("HQ"));
        assert!(read(b"name,subnets\nx,1.0.0.0/8\n").expect_err("header").contains("site_name"));
        let many: String = std::iter::once("site_name,subnets\n".to_owned())
            .chain((0..=MAX_ROWS).map(|i| format!("s{i},\n")))
            .collect();
        assert!(read(many.as_bytes()).expect_err("too many").contains("at most 2000 rows"));
    }
}
