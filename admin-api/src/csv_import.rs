//! Reading a device CSV import (DEV-4) from any `Read`, record by record, in bounded memory:
//! the separator is detected from the header (`,` `;` or tab), records are cut by
//! [`RecordSplitter`] (which drops a record over [`MAX_RECORD_BYTES`] and keeps the line each
//! record starts on), the `csv` crate parses the fields, and each row is validated into an
//! [`ImportRow`] or refused with a row error (line, column, reason). No row error stops the read.

use std::collections::{HashSet, VecDeque};
use std::io::{self, BufRead, Read};
use std::sync::{Arc, Mutex};

use fleetpulse_proto::Mac;
use fleetpulse_store::{
    ImportRow, ImportRowError, MAX_ATTRIBUTES, check_attribute_key, check_attribute_value, check_device_model,
    check_device_name, check_serial, parse_group_cell,
};

/// Longest record (a line, or several when a quoted field holds line breaks), in bytes.
pub(crate) const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Most columns of a file.
pub(crate) const MAX_COLUMNS: usize = 64;

/// What stands in for a record that was too long: one field holding NUL, which no valid row has.
const TOO_LONG: &[u8] = b"\0\n";

/// Why a file cannot be imported at all (the header).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HeaderError(pub(crate) String);

/// A store refusal as a row error's reason (without the "invalid input" prefix).
fn reason(e: fleetpulse_store::StoreError) -> String {
    match e {
        fleetpulse_store::StoreError::InvalidInput(m) => m,
        e => e.to_string(),
    }
}

/// The meaning of a column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Mac,
    Serial,
    Model,
    Name,
    /// `endpoint_group`: the device's groups by name, `|`-separated, top priority first (PRV-2).
    Groups,
    Attribute(String),
}

/// One row read: valid, or refused.
pub(crate) type ReadRow = Result<ImportRow, ImportRowError>;

/// Cuts the byte stream into records (a record ends at a line break outside quotes, as the
/// `csv` crate reads them), replacing a record over [`MAX_RECORD_BYTES`] by a stand-in, and
/// notes the line each record starts on, in order, for [`DeviceCsv`].
struct RecordSplitter<R> {
    inner: R,
    separator: u8,
    /// The record being cut (at most [`MAX_RECORD_BYTES`] + a chunk).
    pending: Vec<u8>,
    /// Released bytes not read yet.
    out: VecDeque<u8>,
    /// Start lines of the released records.
    lines: Arc<Mutex<VecDeque<u64>>>,
    /// The physical line being read, and the line the pending record started on.
    line: u64,
    start: u64,
    state: QuoteState,
    /// The pending record overflowed: drop bytes until its end.
    overflow: bool,
    eof: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: an escaped quote if another follows, else the close.
    AfterInnerQuote,
}

impl<R: Read> RecordSplitter<R> {
    fn new(inner: R, separator: u8, first_line: u64, lines: Arc<Mutex<VecDeque<u64>>>) -> Self {
        RecordSplitter {
            inner,
            separator,
            pending: Vec::new(),
            out: VecDeque::new(),
            lines,
            line: first_line,
            start: first_line,
            state: QuoteState::FieldStart,
            overflow: false,
            eof: false,
        }
    }

    fn end_record(&mut self) {
        let blank = !self.overflow && self.pending.iter().all(|b| matches!(b, b'\r' | b'\n'));
        if !blank {
            if let Ok(mut lines) = self.lines.lock() {
                lines.push_back(self.start);
            }
            if self.overflow {
                self.out.extend(TOO_LONG);
            } else {
                self.out.extend(self.pending.iter());
                if self.pending.last() != Some(&b'\n') {
                    self.out.push_back(b'\n');
                }
            }
        }
        self.pending.clear();
        self.overflow = false;
        self.state = QuoteState::FieldStart;
        self.start = self.line;
    }

    fn push(&mut self, b: u8) {
        if !self.overflow {
            self.pending.push(b);
            if self.pending.len() > MAX_RECORD_BYTES {
                self.overflow = true;
                self.pending.clear();
            }
        }
        self.state = match (self.state, b) {
            (QuoteState::FieldStart, b'"') => QuoteState::Quoted,
            (QuoteState::Quoted, b'"') => QuoteState::AfterInnerQuote,
            (QuoteState::AfterInnerQuote, b'"') => QuoteState::Quoted,
            (QuoteState::Quoted, _) => QuoteState::Quoted,
            (_, b) if b == self.separator => QuoteState::FieldStart,
            _ => QuoteState::Unquoted,
        };
        if b == b'\n' {
            self.line += 1;
            if self.state != QuoteState::Quoted {
                self.end_record();
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        while self.out.is_empty() && !self.eof {
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                self.eof = true;
                if !self.pending.is_empty() || self.overflow {
                    self.end_record();
                }
                break;
            }
            for &b in &chunk[..n] {
                self.push(b);
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for RecordSplitter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill()?;
        let n = buf.len().min(self.out.len());
        for (slot, b) in buf.iter_mut().zip(self.out.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

/// The separator of a header line: the most frequent of `,` `;` and tab (comma if none).
fn detect_separator(header: &[u8]) -> u8 {
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&s| (header.iter().filter(|&&b| b == s).count(), s == b','))
        .unwrap_or(b',')
}

/// A device CSV being read: an iterator of rows after the header.
pub(crate) struct DeviceCsv<R: Read> {
    records: csv::Reader<RecordSplitter<io::BufReader<R>>>,
    lines: Arc<Mutex<VecDeque<u64>>>,
    columns: Vec<Column>,
    names: Vec<String>,
    seen_macs: HashSet<Mac>,
    seen_serials: HashSet<String>,
    record: csv::ByteRecord,
    /// The separator detected.
    pub(crate) separator: u8,
}

impl<R: Read> DeviceCsv<R> {
    /// Reads and checks the header (the first line, at most [`MAX_RECORD_BYTES`]).
    pub(crate) fn open(source: R) -> Result<DeviceCsv<R>, HeaderError> {
        let mut source = io::BufReader::new(source);
        let mut header = Vec::new();
        (&mut source)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut header)
            .map_err(|e| HeaderError(format!("reading the header: {e}")))?;
        if header.len() > MAX_RECORD_BYTES {
            return Err(HeaderError(format!("the header line is longer than {MAX_RECORD_BYTES} bytes")));
        }
        let header = header.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&header).to_vec();
        let text = std::str::from_utf8(&header).map_err(|_| HeaderError("the header is not UTF-8".into()))?;
        let separator = detect_separator(&header);
        let mut names = Vec::new();
        let mut reader = csv::ReaderBuilder::new().has_headers(false).delimiter(separator).from_reader(text.as_bytes());
        if let Some(first) = reader.records().next() {
            let first = first.map_err(|e| HeaderError(format!("the header: {e}")))?;
            names = first.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
        }
        if names.is_empty() || names.iter().all(String::is_empty) {
            return Err(HeaderError("the file is empty: a header line is required".into()));
        }
        if names.len() > MAX_COLUMNS {
            return Err(HeaderError(format!("{} columns (at most {MAX_COLUMNS})", names.len())));
        }
        let mut columns = Vec::new();
        let mut seen = HashSet::new();
        let mut attributes = 0;
        for name in &names {
            if !seen.insert(name.clone()) {
                return Err(HeaderError(format!("column {name:?} appears twice")));
            }
            columns.push(match name.as_str() {
                "mac_address" => Column::Mac,
                "serial_number" => Column::Serial,
                "endpoint_type" | "model" => Column::Model,
                "endpoint_name" | "name" => Column::Name,
                "endpoint_group" => Column::Groups,
                other => {
                    check_attribute_key(other).map_err(|_| {
                        HeaderError(format!(
                            "column {other:?} is not a valid attribute name (a-z, 0-9, '_', '.', '-'; is the \
                             separator mixed?)"
                        ))
                    })?;
                    attributes += 1;
                    Column::Attribute(other.to_owned())
                }
            });
        }
        if attributes > MAX_ATTRIBUTES {
            return Err(HeaderError(format!("{attributes} attribute columns (a device has at most {MAX_ATTRIBUTES})")));
        }
        if !columns.iter().any(|c| matches!(c, Column::Mac | Column::Serial)) {
            return Err(HeaderError("a mac_address or serial_number column is required".into()));
        }
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let splitter = RecordSplitter::new(source, separator, 2, lines.clone());
        let records =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(separator).from_reader(splitter);
        Ok(DeviceCsv {
            records,
            lines,
            columns,
            names,
            seen_macs: HashSet::new(),
            seen_serials: HashSet::new(),
            record: csv::ByteRecord::new(),
            separator,
        })
    }

    fn next_line(&self) -> u64 {
        self.lines.lock().ok().and_then(|mut l| l.pop_front()).unwrap_or(0)
    }

    /// The row of the current record.
    fn row(&mut self, line: u64) -> ReadRow {
        let err = |column: &str, reason: &str| ImportRowError::new(line, column, reason);
        if self.record.len() == 1 && self.record.get(0) == Some(b"\0") {
            return Err(err("", &format!("the record is longer than {MAX_RECORD_BYTES} bytes")));
        }
        if self.record.len() != self.columns.len() {
            return Err(err(
                "",
                &format!(
                    "{} fields where the header has {} (is the separator '{}' used throughout?)",
                    self.record.len(),
                    self.columns.len(),
                    char::from(self.separator).escape_default()
                ),
            ));
        }
        let groups = self.columns.contains(&Column::Groups).then(Vec::new);
        let mut row = ImportRow {
            line,
            mac: None,
            serial: None,
            model: None,
            name: None,
            attributes: Default::default(),
            groups,
        };
        for (i, column) in self.columns.iter().enumerate() {
            let name = &self.names[i];
            let raw = self.record.get(i).unwrap_or_default();
            let value = std::str::from_utf8(raw).map_err(|_| err(name, "not UTF-8"))?.trim();
            if value.contains('\0') {
                return Err(err(name, "holds a NUL character"));
            }
            if value.is_empty() {
                continue;
            }
            match column {
                Column::Mac => {
                    let mac = Mac::parse(&value.to_ascii_lowercase())
                        .map_err(|_| err(name, "not a MAC address (12 hex digits)"))?;
                    row.mac = Some(mac);
                }
                Column::Serial => {
                    check_serial(value).map_err(|e| err(name, &reason(e)))?;
                    row.serial = Some(value.to_owned());
                }
                Column::Model => {
                    check_device_model(value).map_err(|e| err(name, &reason(e)))?;
                    row.model = Some(value.to_owned());
                }
                Column::Name => {
                    check_device_name(value).map_err(|e| err(name, &reason(e)))?;
                    row.name = Some(value.to_owned());
                }
                Column::Groups => {
                    row.groups = Some(parse_group_cell(value).map_err(|e| err(name, &reason(e)))?);
                }
                Column::Attribute(_) => {
                    check_attribute_value(name, value).map_err(|e| err(name, &reason(e)))?;
                    row.attributes.insert(name.clone(), value.to_owned());
                }
            }
        }
        if row.mac.is_none() && row.serial.is_none() {
            return Err(err("mac_address", "a mac_address or serial_number is required"));
        }
        if let Some(mac) = row.mac {
            if !self.seen_macs.insert(mac) {
                return Err(err("mac_address", "the MAC address appears on an earlier row"));
            }
        } else if let Some(serial) = &row.serial
            && !self.seen_serials.insert(serial.clone())
        {
            return Err(err("serial_number", "the serial number appears on an earlier row"));
        }
        Ok(row)
    }
}

impl<R: Read> Iterator for DeviceCsv<R> {
    /// A row, or `Err(io)` when the source failed (the read ends).
    type Item = io::Result<ReadRow>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut record = std::mem::take(&mut self.record);
        let read = self.records.read_byte_record(&mut record);
        self.record = record;
        match read {
            Ok(false) => None,
            Ok(true) => {
                let line = self.next_line();
                Some(Ok(self.row(line)))
            }
            Err(e) => match e.into_kind() {
                csv::ErrorKind::Io(io) => Some(Err(io)),
                other => {
                    let line = self.next_line();
                    Some(Ok(Err(ImportRowError::new(line, "", &format!("unreadable record: {other:?}")))))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row's line and either the MAC or `column: reason`.
    fn check(input: &[u8], want: &[&str]) {
        let rows: Vec<String> = DeviceCsv::open(input)
            .expect("header")
            .map(|r| match r.expect("no I/O error") {
                Ok(row) => format!(
                    "{} {}",
                    row.line,
                    row.mac.map(|m| m.as_str().to_owned()).or(row.serial).unwrap_or_default()
                ),
                Err(e) => format!("{} {}: {}", e.line, e.column, e.reason),
            })
            .collect();
        let got: Vec<&str> = rows.iter().map(String::as_str).collect();
        assert_eq!(got, want, "{}", String::from_utf8_lossy(input));
    }

    #[test]
    fn separators_are_detected_and_rows_validated() {
        check(b"mac_address,endpoint_name\n0004F23EA4E1,desk\n", &["2 0004f23ea4e1"]);
        check(
            b"mac_address;endpoint_name\r\n0004F23EA4E1;desk\r\n\r\n0004F23EA4E2;x",
            &["2 0004f23ea4e1", "4 0004f23ea4e2"],
        );
        check(
            b"serial_number\tmac_address\nSN1\t\nSN1\t\n",
            &["2 SN1", "3 serial_number: the serial number appears on an earlier row"],
        );
        check(
            b"mac_address,endpoint_name\nzz,a\n0004F23EA4E1,a\n0004f23ea4e1,b\n,c\n",
            &[
                "2 mac_address: not a MAC address (12 hex digits)",
                "3 0004f23ea4e1",
                "4 mac_address: the MAC address appears on an earlier row",
                "5 mac_address: a mac_address or serial_number is required",
            ],
        );
    }

    #[test]
    fn a_mixed_separator_or_bad_bytes_fail_their_row_only() {
        check(
            b"mac_address,endpoint_name\n0004F23EA4E1;desk\n0004F23EA4E2,\xff\xfe\n0004F23EA4E3,ok\n",
            &[
                "2 : 1 fields where the header has 2 (is the separator ',' used throughout?)",
                "3 endpoint_name: not UTF-8",
                "4 0004f23ea4e3",
            ],
        );
    }

    #[test]
    fn quoted_line_breaks_keep_line_numbers_and_long_records_are_refused() {
        check(
            b"mac_address,note\n0004F23EA4E1,\"two\nlines\"\n0004F23EA4E2,\"a,b\"\n",
            &["2 note: attribute note holds a control character", "4 0004f23ea4e2"],
        );
        let mut long = b"mac_address,note\n0004F23EA4E1,".to_vec();
        long.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
        long.extend(b"\n0004F23EA4E2,ok\n");
        check(&long, &["2 : the record is longer than 65536 bytes", "3 0004f23ea4e2"]);
        // An unclosed quote swallows the rest of the file: one refused record, no allocation.
        let mut open = b"mac_address,note\n0004F23EA4E1,\"never closed\n".to_vec();
        open.extend(std::iter::repeat_n(b'b', 200 * 1024));
        check(&open, &["2 : the record is longer than 65536 bytes"]);
    }

    #[test]
    fn headers_are_checked() {
        for (bad, needle) in [
            (&b""[..], "empty"),
            (b"endpoint_name,x\n", "mac_address or serial_number"),
            (b"mac_address,Bad Column\n", "not a valid attribute"),
            (b"mac_address,mac_address\n", "twice"),
        ] {
            let e = DeviceCsv::open(bad).err().expect("refused");
            assert!(e.0.contains(needle), "{e}");
        }
    }

    #[test]
    fn groups_and_attributes_are_kept_and_formulas_are_plain_text() {
        let mut csv =
            DeviceCsv::open(&b"MAC_Address,endpoint_group,reg.1.address,note\n0004F23EA4E1,G1|G2,1000,=1+2\n"[..])
                .expect("header");
        let row = csv.next().expect("a row").expect("read").expect("valid");
        assert_eq!(row.groups, Some(vec!["G1".to_owned(), "G2".to_owned()]));
        assert!(!row.attributes.contains_key("endpoint_group"));
        assert_eq!(row.attributes["reg.1.address"], "1000");
        assert_eq!(row.attributes["note"], "=1+2", "stored as text; defused on export");
        // An empty cell is an empty list (overwrite clears, merge keeps); a bad name fails the row.
        let mut csv =
            DeviceCsv::open(&b"mac_address,endpoint_group\n0004F23EA4E2,\n0004F23EA4E3,ok|a;b\n"[..]).expect("header");
        assert_eq!(csv.next().expect("a row").expect("read").expect("valid").groups, Some(Vec::new()));
        let bad = csv.next().expect("a row").expect("read").expect_err("refused");
        assert_eq!((bad.line, bad.column.as_str()), (3, "endpoint_group"));
        assert!(bad.reason.contains("a;b"), "{}", bad.reason);
        let none = DeviceCsv::open(&b"mac_address\n0004F23EA4E4\n"[..]).expect("header").next();
        assert_eq!(none.expect("a row").expect("read").expect("valid").groups, None, "no column, no change");
    }
}
