//! Devices (DEV-1, DEV-3): the filtered, sorted device list over the store's persisted
//! snapshot, the device detail in PDMS-E's status model, and its CPU/memory history.

use axum::extract::{RawQuery, State};
use axum::routing::{MethodRouter, get, post};

use crate::routes::{device_export, device_imports, inventory};
use fleetpulse_ingest::LiveDevice;
use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::domain::{CallStatus, SipLine, SipSummary};
use fleetpulse_proto::{ChannelId, DeviceId, EnterpriseId, UnixMillis};
use fleetpulse_store::{
    DevicePageRequest, DeviceQuery, DeviceSortColumn, DeviceSummary, MAX_DEVICE_FILTER_IDS, MAX_DEVICE_PAGE,
    MAX_RESOURCE_HISTORY, ResourcePoint,
};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use fleetpulse_store::{Feature, LicenceStatus};

/// Default page of the device listing.
const LIST_DEFAULT: u32 = 50;

/// Longest query string of a device listing, in bytes (10,000 ids fit).
pub(crate) const MAX_DEVICE_QUERY_STRING: usize = 256 * 1024;

/// Default span of the resource history: the last 24 hours.
const HISTORY_SPAN_MS: i64 = 24 * 3600 * 1000;

/// Default number of samples of the resource history.
const HISTORY_DEFAULT: u32 = 100;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/devices", get(list).post(inventory::add)),
        ("/api/v1/devices/export", get(device_export::export)),
        ("/api/v1/devices/bulk-edit", post(inventory::bulk_edit)),
        ("/api/v1/devices/{id}", get(show).patch(inventory::edit).delete(inventory::delete)),
        ("/api/v1/devices/{id}/move", post(inventory::move_device)),
        ("/api/v1/devices/{id}/resources", get(resources)),
        ("/api/v1/device-imports", get(device_imports::list).post(device_imports::import)),
        ("/api/v1/device-imports/{id}", get(device_imports::show)),
        ("/api/v1/device-imports/{id}/errors.csv", get(device_imports::errors_csv)),
    ]
}

/// The parameters of a device listing (and of a dashboard or a saved search label), parsed
/// from a query string: the filters, and the tenant filters the caller asked for (resolved
/// against its scope by [`AuthAdmin::device_scope`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DeviceParams {
    /// Filters and order (`enterprises` and `channels` are left unset here).
    pub(crate) query: DeviceQuery,
    /// `enterprise_id`, repeated.
    pub(crate) enterprises: Option<Vec<EnterpriseId>>,
    /// `channel_id` (sub-channel), repeated.
    pub(crate) channels: Option<Vec<ChannelId>>,
    /// `cursor`.
    pub(crate) cursor: Option<String>,
    /// `limit`.
    pub(crate) limit: Option<u32>,
}

/// The names [`parse_device_params`] accepts.
pub(crate) const DEVICE_PARAMS: &[&str] = &[
    "enterprise_id",
    "channel_id",
    "site_id",
    "group",
    "device_type",
    "online",
    "sip_status",
    "licence",
    "model",
    "firmware",
    "public_ip",
    "private_ip",
    "reported_from",
    "reported_to",
    "q",
    "sort",
    "order",
    "cursor",
    "limit",
];

/// The query parameters of [`parse_device_params`] for the OpenAPI document: one per name of
/// [`DEVICE_PARAMS`], typed as the parser reads it.
impl schemars::JsonSchema for DeviceParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceParams".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names = |all: Vec<&'static str>| serde_json::json!({"type": "string", "enum": all});
        let mut properties = serde_json::Map::new();
        for &name in DEVICE_PARAMS {
            let schema = match name {
                "enterprise_id" | "channel_id" | "site_id" => {
                    serde_json::json!({"type": "integer", "format": "int64", "description": "may repeat"})
                }
                "group" => {
                    serde_json::json!({"type": "integer", "format": "int64", "description": "a device group's id"})
                }
                "reported_from" | "reported_to" => serde_json::json!({"type": "integer", "format": "int64"}),
                "limit" => serde_json::json!({"type": "integer", "minimum": 1, "maximum": MAX_DEVICE_PAGE}),
                "online" => serde_json::json!({"type": "boolean"}),
                "device_type" => names(DeviceType::ALL.iter().map(|t| t.as_str()).collect()),
                "sip_status" => names(vec!["registered", "partial", "unregistered", "unknown"]),
                "licence" => names(vec!["licensed", "unlicensed", "unknown"]),
                "sort" => names(DeviceSortColumn::ALL.iter().map(|c| c.as_str()).collect()),
                "order" => names(vec!["asc", "desc"]),
                _ => serde_json::json!({"type": "string"}),
            };
            properties.insert(name.to_owned(), schema);
        }
        schemars::json_schema!({"type": "object", "properties": properties})
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| ApiError::invalid(format!("{name} must be a number, not {value:?}")))
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(ApiError::invalid(format!("{name} is given twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses the query string of a device listing: `enterprise_id` and `channel_id` may repeat,
/// every other parameter appears at most once; an unknown parameter or a bad value is 400
/// `invalid_request` naming it. The store's bounds ([`DeviceQuery::validate`]) are checked too.
pub(crate) fn parse_device_params(raw: &str) -> Result<DeviceParams, ApiError> {
    if raw.len() > MAX_DEVICE_QUERY_STRING {
        return Err(ApiError::invalid(format!("query string longer than {MAX_DEVICE_QUERY_STRING} bytes")));
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| ApiError::invalid(format!("malformed query string: {e}")))?;
    let mut p = DeviceParams::default();
    let (mut sort, mut order) = (None, None);
    for (name, value) in pairs {
        let q = &mut p.query;
        match name.as_str() {
            "enterprise_id" => {
                let list = p.enterprises.get_or_insert_with(Vec::new);
                if list.len() >= MAX_DEVICE_FILTER_IDS {
                    return Err(ApiError::invalid(format!("at most {MAX_DEVICE_FILTER_IDS} enterprise_id values")));
                }
                list.push(EnterpriseId(number(&name, &value)?));
            }
            "channel_id" => {
                let list = p.channels.get_or_insert_with(Vec::new);
                if list.len() >= MAX_DEVICE_FILTER_IDS {
                    return Err(ApiError::invalid(format!("at most {MAX_DEVICE_FILTER_IDS} channel_id values")));
                }
                list.push(ChannelId(number(&name, &value)?));
            }
            "site_id" => {
                // The site and every site below it (PRV-1); a site the caller does not see
                // matches none of the devices it sees.
                let list = q.sites.get_or_insert_with(Vec::new);
                if list.len() >= MAX_DEVICE_FILTER_IDS {
                    return Err(ApiError::invalid(format!("at most {MAX_DEVICE_FILTER_IDS} site_id values")));
                }
                list.push(fleetpulse_proto::SiteId(number(&name, &value)?));
            }
            "device_type" => {
                let t = DeviceType::parse(&value).ok_or_else(|| {
                    let names: Vec<&str> = DeviceType::ALL.iter().map(|t| t.as_str()).collect();
                    ApiError::invalid(format!("device_type must be one of {}", names.join(", ")))
                })?;
                set_once(&mut q.device_type, &name, t)?;
            }
            "online" => {
                let o = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::invalid("online must be true or false")),
                };
                set_once(&mut q.online, &name, o)?;
            }
            "sip_status" => {
                let s = match value.as_str() {
                    "registered" => SipSummary::Registered,
                    "partial" => SipSummary::Partial,
                    "unregistered" => SipSummary::Unregistered,
                    "unknown" => SipSummary::Unknown,
                    _ => {
                        return Err(ApiError::invalid(
                            "sip_status must be one of registered, partial, unregistered, unknown",
                        ));
                    }
                };
                set_once(&mut q.sip_status, &name, s)?;
            }
            "licence" => {
                let l = match value.as_str() {
                    "licensed" => LicenceStatus::Licensed,
                    "unlicensed" => LicenceStatus::Unlicensed,
                    "unknown" => LicenceStatus::Unknown,
                    _ => return Err(ApiError::invalid("licence must be one of licensed, unlicensed, unknown")),
                };
                set_once(&mut q.licence, &name, l)?;
            }
            "group" => {
                let id: u64 = number(&name, &value)?;
                if id > fleetpulse_proto::MAX_ID {
                    return Err(ApiError::invalid(format!("group must be at most {}", fleetpulse_proto::MAX_ID)));
                }
                set_once(&mut q.group, &name, fleetpulse_proto::GroupId(id))?;
            }
            "model" => set_once(&mut q.model, &name, value)?,
            "firmware" => set_once(&mut q.firmware, &name, value)?,
            "public_ip" => set_once(&mut q.public_ip, &name, value)?,
            "private_ip" => set_once(&mut q.private_ip, &name, value)?,
            "q" => set_once(&mut q.q, &name, value)?,
            "reported_from" => set_once(&mut q.reported_from, &name, UnixMillis(number(&name, &value)?))?,
            "reported_to" => set_once(&mut q.reported_to, &name, UnixMillis(number(&name, &value)?))?,
            "sort" => {
                let column = DeviceSortColumn::parse(&value).ok_or_else(|| {
                    let names: Vec<&str> = DeviceSortColumn::ALL.iter().map(|c| c.as_str()).collect();
                    ApiError::invalid(format!("sort must be one of {} (or status)", names.join(", ")))
                })?;
                set_once(&mut sort, &name, column)?;
            }
            "order" => {
                let desc = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(ApiError::invalid("order must be asc or desc")),
                };
                set_once(&mut order, &name, desc)?;
            }
            "cursor" => set_once(&mut p.cursor, &name, value)?,
            "limit" => {
                let limit: u32 = number(&name, &value)?;
                if !(1..=MAX_DEVICE_PAGE).contains(&limit) {
                    return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_DEVICE_PAGE}")));
                }
                set_once(&mut p.limit, &name, limit)?;
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown parameter {other:?} (known: {})",
                    DEVICE_PARAMS.join(", ")
                )));
            }
        }
    }
    p.query.sort = sort.unwrap_or(DeviceSortColumn::Created);
    p.query.descending = order.unwrap_or(false);
    p.query.validate()?;
    Ok(p)
}

/// A row of the device list: the device, its enterprise and snapshot, and its live state (null
/// if it was not seen since the process started).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeviceItem {
    #[serde(flatten)]
    summary: DeviceSummary,
    live: Option<LiveDevice>,
}

impl DeviceItem {
    /// The row with the live state: `online` shows the live flag when the device was seen since
    /// start (the stored snapshot follows it within a second; filters use the stored one).
    fn new(ctx: &AppState, mut summary: DeviceSummary) -> DeviceItem {
        let live = ctx.api.live.get(summary.device.id);
        if let Some(l) = &live {
            summary.snapshot.online = l.online;
        }
        DeviceItem { summary, live }
    }
}

/// One page of the device list.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeviceListPage {
    items: Vec<DeviceItem>,
    /// Pass as `cursor` (with the same filters and sort) for the next page; null on the last.
    next_cursor: Option<String>,
    /// Devices matching the filters, over all pages.
    total: u64,
}

/// `GET /api/v1/devices?enterprise_id=&channel_id=&group=&device_type=&online=&sip_status=&model=
/// &firmware=&public_ip=&private_ip=&reported_from=&reported_to=&q=&sort=&order=&cursor=&limit=`
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeviceListPage>, ApiError> {
    auth.require(Feature::Devices)?;
    let params = parse_device_params(raw.as_deref().unwrap_or(""))?;
    crate::licences::settle(&ctx).await?;
    let (enterprises, channels) = auth.device_scope(&ctx, params.enterprises, params.channels).await?;
    let query = DeviceQuery { enterprises, channels, ..params.query };
    let page = DevicePageRequest { cursor: params.cursor, limit: params.limit.unwrap_or(LIST_DEFAULT) };
    let found = ctx.api.store.entities.query_devices(query, page).await?;
    let items = found.items.into_iter().map(|summary| DeviceItem::new(&ctx, summary)).collect();
    Ok(Json(DeviceListPage { items, next_cursor: found.next_cursor, total: found.total }))
}

/// PDMS-E's device status model (DEV-3).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct StatusModel {
    /// Online now: the live state if the device was seen since start, else the snapshot.
    online: bool,
    /// SIP account status over all lines.
    sip_status: SipSummary,
    /// SIP registration per line, from the last report.
    sip_registration: Vec<SipLine>,
    /// Call status from the last report.
    call_status: Option<CallStatus>,
    /// Licence status (ORD-3): `licensed` or `unlicensed` once an order of the enterprise has
    /// started (the oldest devices up to the allowance are licensed), else `unknown`.
    licence_status: LicenceStatus,
    /// Uptime in seconds at the last report.
    uptime_s: Option<u64>,
    /// Last reboot.
    last_reboot: Option<UnixMillis>,
    /// Time of the last status report.
    last_report_at: Option<UnixMillis>,
    /// Last provisioning result and time (PRV-4): null if the device was never provisioned.
    last_provision: Option<crate::provisioning::LastProvision>,
}

/// The device detail: the list row plus the status model.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DeviceDetail {
    #[serde(flatten)]
    item: DeviceItem,
    status: StatusModel,
    /// Attributes given by admins or imports (DEV-4).
    attributes: fleetpulse_store::Attributes,
}

/// `GET /api/v1/devices/{id}`: the device with its status model (DEV-3), or 404.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
) -> Result<Json<DeviceDetail>, ApiError> {
    auth.require(Feature::Devices)?;
    crate::licences::settle(&ctx).await?;
    let summary = match ctx.api.store.entities.device_summary(id).await? {
        Some(d) if auth.can_see(&ctx, d.device.enterprise_id).await? => d,
        _ => return Err(ApiError::NotFound("device")),
    };
    let item = DeviceItem::new(&ctx, summary);
    let s = &item.summary.snapshot;
    let status = StatusModel {
        online: s.online,
        sip_status: s.sip_status,
        sip_registration: s.lines.clone(),
        call_status: s.call_status,
        licence_status: ctx.api.store.entities.device_licence(id).await?.unwrap_or(LicenceStatus::Unknown),
        uptime_s: s.uptime_s,
        last_reboot: s.last_reboot,
        last_report_at: s.last_report_at,
        last_provision: crate::provisioning::last_provision(
            &crate::provisioning::settled_record(ctx.api.store.entities.as_ref(), id).await?,
        ),
    };
    let attributes = ctx.api.store.entities.device_attributes(id).await?.unwrap_or_default();
    Ok(Json(DeviceDetail { item, status, attributes }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<u32>,
}

/// CPU/memory samples, newest first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct History {
    items: Vec<ResourcePoint>,
}

/// `GET /api/v1/devices/{id}/resources?from=&to=&limit=`: the device's CPU/memory samples
/// received in `[from, to)` (unix ms; default the last 24 hours), newest first, at most `limit`
/// (default 100, 1 to 1,000).
async fn resources(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<DeviceId>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    auth.require(Feature::Devices)?;
    let limit = q.limit.unwrap_or(HISTORY_DEFAULT);
    if !(1..=MAX_RESOURCE_HISTORY).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_RESOURCE_HISTORY}")));
    }
    let to = q.to.unwrap_or_else(|| ctx.clock.now().0.saturating_add(1));
    let from = q.from.unwrap_or_else(|| to.saturating_sub(HISTORY_SPAN_MS));
    if from >= to {
        return Err(ApiError::invalid("from must be before to"));
    }
    match ctx.api.store.entities.device(id).await? {
        Some(d) if auth.can_see(&ctx, d.enterprise_id).await? => {}
        _ => return Err(ApiError::NotFound("device")),
    }
    let items = ctx.api.store.events.resource_history(id, UnixMillis(from), UnixMillis(to), limit).await?;
    Ok(Json(History { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_repeat_and_refuse_what_they_do_not_know() {
        let p = parse_device_params(
            "enterprise_id=1&enterprise_id=2&online=true&model=T54W&sort=last_report_at&order=desc&limit=10",
        )
        .expect("valid");
        assert_eq!(p.enterprises, Some(vec![EnterpriseId(1), EnterpriseId(2)]));
        assert_eq!((p.query.online, p.query.model.as_deref()), (Some(true), Some("T54W")));
        assert_eq!((p.query.sort, p.query.descending, p.limit), (DeviceSortColumn::LastReportAt, true, Some(10)));
        for bad in [
            "sort=color",
            "order=up",
            "online=yes",
            "device_type=toaster",
            "sip_status=maybe",
            "enterprise_id=x",
            "limit=0",
            "limit=1001",
            "model=a&model=b",
            "colour=red",
            "public_ip=10.%25",
            "reported_from=soon",
        ] {
            assert!(parse_device_params(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_device_params("").expect("empty").query, DeviceQuery::default());
    }
}
