//! The RPS device list (DEV-1) of enterprises with the RPS permission: entries (a device's MAC or
//! serial number → its provisioning server URL) listed, added, edited, deleted and imported from
//! CSV (read by the device import's reader, `csv_import.rs`), and the redirect lookup devices
//! make without logging in (`GET /api/v1/rps/redirect`), rate-limited per client IP and per
//! device. Who may see and change a list is the policy's (`Target::Rps`): whoever sees the
//! enterprise's data, no acting needed, while the enterprise's RPS permission is on.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{EnterpriseId, Mac, RpsDeviceId};
use fleetpulse_store::{
    Feature, ImportRowError, MAX_RPS_IMPORT_ROWS, NewRpsDevice, RpsDevice, RpsFilter, RpsImportOutcome,
};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::openapi::{Operation, delete_, get_, post_, put_};
use crate::policy::Target;
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;

const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1000;
/// Limits of the redirect lookups: 600 a minute from one IP (a site's phones booting behind one
/// NAT), 10 a minute for one device (a device asks once per boot).
pub(crate) const REDIRECT_LIMITS: crate::rate_limit::LoginRateLimits = crate::rate_limit::LoginRateLimits {
    per_ip_per_minute: std::num::NonZeroU32::new(600).expect("600 is not zero"),
    per_account_per_minute: std::num::NonZeroU32::new(10).expect("10 is not zero"),
    max_keys: 100_000,
};
/// Largest RPS CSV import body.
pub(crate) const MAX_IMPORT_BYTES: usize = 2 * 1024 * 1024;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/rps-devices", get(list).post(add)),
        ("/api/v1/rps-devices/import", post(import)),
        ("/api/v1/rps-devices/{id}", get(show).put(edit).delete(remove)),
        ("/api/v1/rps/redirect", get(redirect)),
    ]
}

/// The documented operations of this module.
pub(crate) fn operations() -> Vec<Operation> {
    const RPS: &str = "RPS";
    vec![
        get_("/api/v1/rps-devices", RPS, "RPS device lists the caller sees (one enterprise with enterprise_id)")
            .query::<RpsQuery>()
            .answers::<ListPage<RpsDevice>>(200),
        post_("/api/v1/rps-devices", RPS, "Add a device (MAC or serial) and its provisioning server to an RPS list")
            .body::<AddRpsDevice>()
            .answers::<RpsDevice>(201)
            .may_fail(&[409, 429]),
        post_(
            "/api/v1/rps-devices/import",
            RPS,
            "Import a CSV (mac_address or serial_number, server_url) into an enterprise's RPS list: rows added or updated, each refused row reported",
        )
        .query::<ImportQuery>()
        .answers::<RpsImportReport>(200)
        .may_fail(&[429]),
        get_("/api/v1/rps-devices/{id}", RPS, "One RPS entry").answers::<RpsDevice>(200),
        put_("/api/v1/rps-devices/{id}", RPS, "Change an RPS entry's server URL")
            .body::<EditRpsDevice>()
            .answers::<RpsDevice>(200),
        delete_("/api/v1/rps-devices/{id}", RPS, "Delete an RPS entry").answers_raw(204, ""),
        get_(
            "/api/v1/rps/redirect",
            RPS,
            "Devices: the provisioning server of the device with this MAC or serial (no login; rate-limited; 404 for an unknown device)",
        )
        .public()
        .query::<RedirectQuery>()
        .answers::<Redirect>(200)
        .may_fail(&[404, 429]),
    ]
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RpsQuery {
    /// One enterprise's list (channels and the platform: optional, else every list they see).
    enterprise_id: Option<EnterpriseId>,
    /// Case-insensitive substring of the MAC, serial or URL.
    q: Option<String>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// 403 unless the caller may use devices; then the policy's word on the enterprise's list.
async fn may_use(ctx: &AppState, auth: &AuthAdmin, enterprise: EnterpriseId) -> Result<(), ApiError> {
    auth.require(Feature::Devices)?;
    auth.decide(ctx, Target::Rps(enterprise)).await.map(drop)
}

/// `GET /api/v1/rps-devices?enterprise_id=&q=&after=&limit=`: entries ordered by id; with
/// `enterprise_id` that enterprise's (404 out of scope, 403 `permission_disabled` without RPS),
/// else every list the caller sees.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<RpsQuery>,
) -> Result<Json<ListPage<RpsDevice>>, ApiError> {
    auth.require(Feature::Devices)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let (one, visible) = auth.listing_filter(&ctx, q.enterprise_id).await?;
    if let Some(e) = one {
        may_use(&ctx, &auth, e).await?;
    }
    let filter = RpsFilter { enterprises: one.map(|e| vec![e]).or(visible), q: q.q };
    let items = ctx.api.store.entities.list_rps_devices(&filter, page).await?;
    Ok(Json(ListPage::new(items, page, |d| d.id.0)))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddRpsDevice {
    /// The enterprise (an enterprise account: its own by default).
    enterprise_id: Option<EnterpriseId>,
    /// The device's MAC (12 hex digits; separators `:` and `-` are allowed); or `serial`.
    mac: Option<String>,
    /// The device's serial number, for a device keyed without MAC.
    serial: Option<String>,
    /// Its provisioning server: an `http://` or `https://` URL.
    server_url: String,
}

/// The device key of a request: exactly one of a MAC (any case, `:`/`-` separators) and a serial.
fn device_key(mac: Option<&str>, serial: Option<&str>) -> Result<DeviceKey, ApiError> {
    match (mac.map(str::trim).filter(|m| !m.is_empty()), serial.map(str::trim).filter(|s| !s.is_empty())) {
        (Some(mac), None) => {
            let plain: String =
                mac.chars().filter(|c| !matches!(c, ':' | '-')).collect::<String>().to_ascii_lowercase();
            Mac::parse(&plain).map(DeviceKey::Mac).map_err(|_| ApiError::invalid("mac must be 12 hex digits"))
        }
        (None, Some(serial)) => Ok(DeviceKey::Serial(serial.to_owned())),
        _ => Err(ApiError::invalid("give exactly one of mac and serial")),
    }
}

/// The enterprise a request names, or the caller's own (400 for others without one).
async fn named_enterprise(ctx: &AppState, auth: &AuthAdmin, e: Option<EnterpriseId>) -> Result<EnterpriseId, ApiError> {
    auth.enterprise_filter(ctx, e).await?.ok_or_else(|| ApiError::invalid("enterprise_id is required"))
}

/// `POST /api/v1/rps-devices` `{enterprise_id?, mac | serial, server_url}`: 201 with the entry.
/// 409 when the device is in an RPS list already (any enterprise's: a device is redirected to
/// one server); 429 beyond 100,000 entries per enterprise.
async fn add(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<AddRpsDevice>,
) -> Result<Response, ApiError> {
    let enterprise = named_enterprise(&ctx, &auth, req.enterprise_id).await?;
    may_use(&ctx, &auth, enterprise).await?;
    let key = device_key(req.mac.as_deref(), req.serial.as_deref())?;
    let new = NewRpsDevice {
        enterprise_id: enterprise,
        key,
        server_url: req.server_url.trim().to_owned(),
        at: ctx.clock.now(),
    };
    let added = ctx.api.store.entities.add_rps_device(new).await.map_err(|e| match e {
        fleetpulse_store::StoreError::AlreadyExists(_) => {
            ApiError::Conflict("the device is in an RPS list already (a device has one provisioning server)".into())
        }
        e => ApiError::from(e),
    })?;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

/// The entry, or 404 when it does not exist or its enterprise is out of the caller's scope;
/// 403 `permission_disabled` when the enterprise's RPS permission is off.
async fn find(ctx: &AppState, auth: &AuthAdmin, id: RpsDeviceId) -> Result<RpsDevice, ApiError> {
    auth.require(Feature::Devices)?;
    let entry = ctx.api.store.entities.rps_device(id).await?.ok_or(ApiError::NotFound("RPS device"))?;
    if !auth.can_see(ctx, entry.enterprise_id).await? {
        return Err(ApiError::NotFound("RPS device"));
    }
    may_use(ctx, auth, entry.enterprise_id).await?;
    Ok(entry)
}

/// `GET /api/v1/rps-devices/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<RpsDeviceId>,
) -> Result<Json<RpsDevice>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditRpsDevice {
    /// The new provisioning server URL.
    server_url: String,
}

/// `PUT /api/v1/rps-devices/{id}` `{server_url}`: the device is sent to the new server from its
/// next lookup. (Its key does not change: delete and add.)
async fn edit(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<RpsDeviceId>,
    Json(req): Json<EditRpsDevice>,
) -> Result<Json<RpsDevice>, ApiError> {
    find(&ctx, &auth, id).await?;
    let edited = ctx.api.store.entities.set_rps_server(id, req.server_url.trim().to_owned(), ctx.clock.now()).await?;
    Ok(Json(edited.ok_or(ApiError::NotFound("RPS device"))?))
}

/// `DELETE /api/v1/rps-devices/{id}`: 204; the device's lookups answer 404 from then on.
async fn remove(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<RpsDeviceId>,
) -> Result<StatusCode, ApiError> {
    find(&ctx, &auth, id).await?;
    if !ctx.api.store.entities.delete_rps_device(id).await? {
        return Err(ApiError::NotFound("RPS device"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    /// The enterprise (an enterprise account: its own by default).
    enterprise_id: Option<EnterpriseId>,
}

/// What an import did.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub(crate) struct RpsImportReport {
    /// Data rows read.
    rows: u64,
    /// Entries added.
    added: u64,
    /// Entries of the enterprise given the row's URL.
    updated: u64,
    /// Rows refused (each in `errors`).
    failed: u64,
    /// Each refused row: line, column, reason.
    errors: Vec<ImportRowError>,
}

/// The column of an import row's URL.
const URL_COLUMN: &str = "server_url";

/// `POST /api/v1/rps-devices/import?enterprise_id=` with a CSV body (≤ 2 MiB, ≤ 10,000 rows):
/// the columns and separators of the device import (`mac_address` or `serial_number` required,
/// `,` `;` or tab), plus `server_url` (required, at most 256 characters there); other columns are
/// ignored. A device new to every list is added, one of the enterprise's gets the row's URL, one
/// of another enterprise's list, a bad URL or a bad key is refused alone with its line, column
/// and reason. 200 with the report; 400 for a file without the required columns.
async fn import(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Result<Json<RpsImportReport>, ApiError> {
    let enterprise = named_enterprise(&ctx, &auth, q.enterprise_id).await?;
    may_use(&ctx, &auth, enterprise).await?;
    let bytes = super::sites::read_bounded(body, MAX_IMPORT_BYTES, "an RPS import").await?;
    let reader = crate::csv_import::DeviceCsv::open(bytes.as_slice()).map_err(|e| ApiError::invalid(e.0))?;
    let mut report = RpsImportReport::default();
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for row in reader {
        let row = row.map_err(|e| ApiError::invalid(format!("reading the file: {e}")))?;
        report.rows += 1;
        if report.rows > MAX_RPS_IMPORT_ROWS as u64 {
            return Err(ApiError::invalid(format!("an RPS import has at most {MAX_RPS_IMPORT_ROWS} rows")));
        }
        let checked = row.and_then(|r| {
            let url = r.attributes.get(URL_COLUMN).map(|u| u.trim().to_owned()).unwrap_or_default();
            fleetpulse_store::check_server_url(&url).map_err(|e| {
                let reason = match e {
                    fleetpulse_store::StoreError::InvalidInput(m) => m,
                    e => e.to_string(),
                };
                ImportRowError::new(r.line, URL_COLUMN, &reason)
            })?;
            let key = match (r.mac, r.serial) {
                (Some(mac), _) => DeviceKey::Mac(mac),
                (None, Some(serial)) => DeviceKey::Serial(serial),
                (None, None) => {
                    return Err(ImportRowError::new(
                        r.line,
                        "mac_address",
                        "a mac_address or serial_number is required",
                    ));
                }
            };
            Ok((r.line, key, url))
        });
        match checked {
            Ok((line, key, url)) => {
                lines.push(line);
                rows.push((key, url));
            }
            Err(error) => report.errors.push(error),
        }
    }
    let outcomes = ctx.api.store.entities.import_rps_devices(enterprise, rows, ctx.clock.now()).await?;
    for (outcome, line) in outcomes.into_iter().zip(lines) {
        match outcome {
            RpsImportOutcome::Added(_) => report.added += 1,
            RpsImportOutcome::Updated(_) => report.updated += 1,
            RpsImportOutcome::Taken => report.errors.push(ImportRowError::new(
                line,
                "mac_address",
                "the device is in another enterprise's RPS list",
            )),
        }
    }
    report.errors.sort_by_key(|e| e.line);
    report.failed = report.errors.len() as u64;
    Ok(Json(report))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedirectQuery {
    /// The device's MAC (12 hex digits, any case, `:`/`-` separators allowed).
    mac: Option<String>,
    /// The device's serial number (devices without a MAC).
    serial: Option<String>,
}

/// The answer of a redirect lookup: only the URL.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Redirect {
    /// The provisioning server the device is to ask for its configuration.
    server_url: String,
}

/// `GET /api/v1/rps/redirect?mac=` (or `?serial=`), no login (devices ask it at boot): 200
/// `{"server_url": ...}` for a device in the RPS list of an enterprise whose RPS permission is
/// on; 404 otherwise (unknown device, permission off: the same answer, so the lookup reveals
/// nothing else); 429 with `Retry-After` beyond 600 lookups a minute from one IP or 10 for one
/// device.
async fn redirect(
    ip: crate::rate_limit::ClientIp,
    State(ctx): State<AppState>,
    Query(q): Query<RedirectQuery>,
) -> Result<Json<Redirect>, ApiError> {
    let key = device_key(q.mac.as_deref(), q.serial.as_deref())?;
    let limit_key = match &key {
        DeviceKey::Mac(mac) => format!("mac:{mac}"),
        DeviceKey::Serial(serial) => format!("serial:{serial}"),
    };
    ctx.rps_limits.check(ip.0, Some(&limit_key))?;
    let entities = &ctx.api.store.entities;
    let (enterprise, server_url) = match entities.rps_server(&key).await {
        Ok(Some(found)) => found,
        Ok(None) | Err(fleetpulse_store::StoreError::InvalidInput(_)) => return Err(ApiError::NotFound("device")),
        Err(e) => return Err(e.into()),
    };
    if !entities.enterprise(enterprise).await?.is_some_and(|e| e.profile.rps) {
        return Err(ApiError::NotFound("device"));
    }
    Ok(Json(Redirect { server_url }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_take_one_of_mac_and_serial() {
        let mac = |s: &str| device_key(Some(s), None).ok();
        assert_eq!(mac("00:15:65:AA:BB:CC"), Some(DeviceKey::Mac(Mac::parse("001565aabbcc").expect("mac"))));
        assert_eq!(mac("00-15-65-aa-bb-cc"), mac("001565AABBCC"));
        assert_eq!(mac("001565aabb"), None);
        assert_eq!(device_key(None, Some(" SN1 ")).ok(), Some(DeviceKey::Serial("SN1".into())));
        assert!(device_key(Some("001565aabbcc"), Some("SN1")).is_err());
        assert!(device_key(None, Some("  ")).is_err());
    }
}
