//! `GET /api/v1/devices/export`: the device list as CSV under the list's own filters and sort,
//! with the caller's chosen columns, streamed page by page along the keyset cursor (one page of
//! 1,000 devices in memory at a time; pages read without counting the matches), every cell
//! defused against formula injection.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fleetpulse_store::{DevicePageRequest, DeviceQuery, DeviceSummary, EntityStore, Feature, MAX_DEVICE_PAGE};
use std::sync::Arc;

use crate::auth::AuthAdmin;
use crate::csv_export::defuse;
use crate::error::ApiError;
use crate::routes::devices::parse_device_params;
use crate::state::AppState;

/// The columns an export may have, in their default order (the import's names first, so that
/// an export can be imported again). `attributes` (a JSON object) is chosen explicitly only:
/// it costs a read per device.
pub(crate) const EXPORT_COLUMNS: &[&str] = &[
    "mac_address",
    "serial_number",
    "endpoint_type",
    "endpoint_name",
    "endpoint_group",
    "id",
    "enterprise_id",
    "enterprise",
    "firmware",
    "device_type",
    "online",
    "sip_status",
    "public_ip",
    "private_ip",
    "last_report_at",
    "created_at",
    "attributes",
    "site",
];

/// Columns of an export that names none.
const DEFAULT_COLUMNS: usize = 16;

/// The query string without `columns`, and the chosen columns (checked).
fn split_columns(raw: &str) -> Result<(String, Vec<&'static str>), ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| ApiError::invalid(format!("malformed query string: {e}")))?;
    let mut columns = None;
    let mut rest = Vec::new();
    for (name, value) in pairs {
        if name == "columns" {
            if columns.is_some() {
                return Err(ApiError::invalid("columns is given twice"));
            }
            let chosen = value
                .split(',')
                .map(|c| {
                    EXPORT_COLUMNS.iter().copied().find(|k| *k == c.trim()).ok_or_else(|| {
                        ApiError::invalid(format!("unknown column {c:?} (known: {})", EXPORT_COLUMNS.join(", ")))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            columns = Some(chosen);
        } else if matches!(name.as_str(), "cursor" | "limit") {
            return Err(ApiError::invalid(format!("an export takes no {name} (it holds every matching device)")));
        } else {
            rest.push((name, value));
        }
    }
    let query = serde_urlencoded::to_string(&rest).map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    Ok((query, columns.unwrap_or_else(|| EXPORT_COLUMNS[..DEFAULT_COLUMNS].to_vec())))
}

fn cell(d: &DeviceSummary, column: &str, attributes: Option<&str>) -> String {
    let dev = &d.device;
    let s = &d.snapshot;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    match column {
        "mac_address" => dev.mac.map(|m| m.as_str().to_owned()).unwrap_or_default(),
        "serial_number" => opt(&dev.serial),
        "endpoint_type" => dev.model.clone(),
        "endpoint_name" => dev.name.clone(),
        "endpoint_group" => d.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join("|"),
        "id" => dev.id.0.to_string(),
        "enterprise_id" => dev.enterprise_id.0.to_string(),
        "enterprise" => d.enterprise_name.clone(),
        "firmware" => dev.firmware.clone(),
        "device_type" => s.device_type.as_str().to_owned(),
        "online" => s.online.to_string(),
        "sip_status" => {
            serde_json::to_value(s.sip_status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        }
        "public_ip" => opt(&s.public_ip),
        "private_ip" => opt(&s.private_ip),
        "last_report_at" => s.last_report_at.map(|t| t.0.to_string()).unwrap_or_default(),
        "created_at" => dev.created_at.0.to_string(),
        "attributes" => attributes.unwrap_or("{}").to_owned(),
        "site" => d.site.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
        _ => String::new(),
    }
}

/// Renders records as CSV bytes (CRLF, RFC 4180 quoting), each field defused.
fn render(rows: &[Vec<String>]) -> Result<Bytes, std::io::Error> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::with_capacity(128 * 1024));
    for row in rows {
        w.write_record(row.iter().map(|f| defuse(f).into_owned())).map_err(std::io::Error::other)?;
    }
    w.into_inner().map(Bytes::from).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Where the stream is: the next page's cursor, or done.
struct ExportState {
    store: Arc<dyn EntityStore>,
    query: DeviceQuery,
    columns: Vec<&'static str>,
    cursor: Option<String>,
    header: bool,
    done: bool,
}

async fn next_page(mut st: ExportState) -> Result<Option<(Bytes, ExportState)>, std::io::Error> {
    if st.header {
        st.header = false;
        let header: Vec<String> = st.columns.iter().map(|c| (*c).to_owned()).collect();
        return Ok(Some((render(&[header])?, st)));
    }
    if st.done {
        return Ok(None);
    }
    let page = DevicePageRequest { cursor: st.cursor.take(), limit: MAX_DEVICE_PAGE };
    let found = st.store.scan_devices(st.query.clone(), page).await.map_err(|error| {
        tracing::error!(message = "Reading a device export page failed.", %error);
        std::io::Error::other(error.to_string())
    })?;
    let with_attributes = st.columns.contains(&"attributes");
    let mut rows = Vec::with_capacity(found.items.len());
    for d in &found.items {
        let attributes = if with_attributes {
            let a = st.store.device_attributes(d.device.id).await.map_err(|e| std::io::Error::other(e.to_string()))?;
            Some(serde_json::to_string(&a.unwrap_or_default()).map_err(std::io::Error::other)?)
        } else {
            None
        };
        rows.push(st.columns.iter().map(|c| cell(d, c, attributes.as_deref())).collect());
    }
    st.cursor = found.next_cursor;
    st.done = st.cursor.is_none();
    Ok(Some((render(&rows)?, st)))
}

/// `GET /api/v1/devices/export?<the device list's parameters>&columns=a,b`: every device the
/// list shows under these filters and sort, as a CSV download streamed page by page. Default
/// columns: all but `attributes`. A failure after the first bytes ends the download early.
pub(crate) async fn export(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    auth.require(Feature::Devices)?;
    let (raw, columns) = split_columns(raw.as_deref().unwrap_or(""))?;
    let params = parse_device_params(&raw)?;
    let (enterprises, channels) = auth.device_scope(&ctx, params.enterprises, params.channels).await?;
    let query = DeviceQuery { enterprises, channels, ..params.query };
    let state =
        ExportState { store: ctx.api.store.entities.clone(), query, columns, cursor: None, header: true, done: false };
    let stream = futures_util::stream::try_unfold(state, next_page);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"devices.csv\"")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_chosen_and_checked() {
        let (rest, cols) = split_columns("online=true&columns=mac_address,endpoint_name").expect("valid");
        assert_eq!((rest.as_str(), cols), ("online=true", vec!["mac_address", "endpoint_name"]));
        assert_eq!(split_columns("").expect("valid").1.len(), DEFAULT_COLUMNS);
        assert!(split_columns("columns=colour").is_err());
        assert!(split_columns("cursor=x").is_err());
    }
}
