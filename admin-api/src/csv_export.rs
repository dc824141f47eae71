//! CSV downloads: the `csv` crate writes the records (RFC 4180: CRLF line ends, a field quoted
//! when it holds a separator, a quote or a line break, quotes doubled); this module adds what a
//! spreadsheet user needs on top: cells that a spreadsheet would run as a formula are defused.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// A CSV document being written in memory, then answered as a download.
pub(crate) struct CsvDownload {
    writer: csv::Writer<Vec<u8>>,
}

impl std::fmt::Debug for CsvDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvDownload").finish_non_exhaustive()
    }
}

impl CsvDownload {
    /// A document whose first record is `header`.
    pub(crate) fn new(header: &[&str]) -> Result<CsvDownload, ApiError> {
        let mut download =
            CsvDownload { writer: csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new()) };
        download.record(header)?;
        Ok(download)
    }

    /// Appends one record; each field is defused ([`defuse`]) before it is written.
    pub(crate) fn record<I, F>(&mut self, fields: I) -> Result<(), ApiError>
    where
        I: IntoIterator<Item = F>,
        F: AsRef<str>,
    {
        self.writer
            .write_record(fields.into_iter().map(|f| defuse(f.as_ref()).into_owned()))
            .map_err(|e| ApiError::Internal(format!("csv: {e}")))
    }

    /// The `text/csv` answer, offered for download as `filename`.
    pub(crate) fn into_response(self, filename: &'static str) -> Result<Response, ApiError> {
        let bytes = self.writer.into_inner().map_err(|e| ApiError::Internal(format!("csv: {e}")))?;
        let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .map_err(|e| ApiError::Internal(format!("csv file name: {e}")))?;
        let mut response = bytes.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
        headers.insert(header::CONTENT_DISPOSITION, disposition);
        Ok(response)
    }
}

/// A field a spreadsheet would take as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a
/// leading `'` (CSV injection); anything else is kept as it is.
pub(crate) fn defuse(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{value}").into() } else { value.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(fields: &[&str]) -> String {
        let mut csv = CsvDownload::new(&["h1", "h2"]).expect("header");
        csv.record(fields).expect("record");
        let bytes = csv.writer.into_inner().expect("in memory");
        String::from_utf8(bytes).expect("UTF-8").trim_start_matches("h1,h2\r\n").to_owned()
    }

    #[test]
    fn fields_are_quoted_and_defused() {
        for (raw, want) in [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
        ] {
            assert_eq!(written(&[raw, "x"]), format!("{want},x\r\n"), "{raw:?}");
        }
        assert_eq!(written(&["", "x"]), ",x\r\n", "an empty field stays empty");
        let mut csv = CsvDownload::new(&["h1", "h2"]).expect("header");
        assert!(csv.record(["only one"]).is_err(), "every record has the header's fields");
    }
}
