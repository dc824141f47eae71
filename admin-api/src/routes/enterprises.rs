//! Enterprises: listing with search, creation (with a fresh provisioning credential) and edits
//! of the profile (TEN-1, TEN-2), lookup, the enterprise's authorization of its channel and a
//! channel acting inside it (TEN-3), and the stored-sequences verification endpoint the load
//! tester uses to count stored messages.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{ChannelId, DeviceId, EnterpriseId};
use fleetpulse_store::{
    Acting, ChannelAuthorization, Enterprise, EnterpriseFilter, EnterpriseProfile, Feature, NewEnterprise,
    StoredSequences,
};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query, Unknown, refuse_unknown};
use crate::policy::{self, EnterpriseListing, Target};
use crate::routes::listing::{ListPage, SearchQuery, next_after, page};
use crate::secrets;
use crate::state::AppState;
use crate::text;
use fleetpulse_store::{MAX_COUNTRY_CHARS, MAX_PROFILE_CONTACT, MAX_PROFILE_PHONE, MAX_PROFILE_TIME_ZONE};

/// Most characters of an enterprise name, after trimming.
const MAX_NAME_CHARS: usize = text::MAX_NAME_CHARS;
/// Default and largest page of the enterprise listing.
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1000;
/// Default and largest page of the stored-sequences listing.
const SEQUENCES_DEFAULT: u32 = 1000;
const SEQUENCES_MAX: u32 = 1000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/enterprises", get(list).post(create)),
        ("/api/v1/enterprises/{id}", get(show).put(edit)),
        ("/api/v1/enterprises/{id}/authorization", post(request_authorization)),
        ("/api/v1/enterprises/{id}/authorization/accept", post(accept_authorization)),
        ("/api/v1/enterprises/{id}/authorization/reject", post(reject_authorization)),
        ("/api/v1/enterprises/{id}/authorization/revoke", post(revoke_authorization)),
        ("/api/v1/enterprises/{id}/act", post(act)),
        ("/api/v1/enterprises/{id}/stored-sequences", get(stored_sequences)),
    ]
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct PageQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/v1/enterprises?q=&after=&limit=`: the enterprises the caller may see, ordered by
/// id, optionally only those matching the search.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<ListPage<Enterprise>>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let entities = &ctx.api.store.entities;
    let mut filter = EnterpriseFilter { q: q.q, ..EnterpriseFilter::default() };
    match policy::enterprise_listing(&auth.caller) {
        EnterpriseListing::All => {}
        EnterpriseListing::Within { channels, enterprises } => {
            filter.channels = Some(channels);
            filter.ids = Some(enterprises);
        }
        EnterpriseListing::Only(ids) => filter.ids = Some(ids),
    }
    let items = entities.search_enterprises(filter, page).await?;
    Ok(Json(ListPage::new(items, page, |e| e.id.0)))
}

// No `deny_unknown_fields` on the structs that flatten the profile (serde cannot combine them):
// the keys neither takes land in `unknown`, which must stay empty (`ProfileFields::apply`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct CreateEnterprise {
    name: String,
    /// The managing channel (a channel account: its own by default, or one below it).
    #[serde(default)]
    channel_id: Option<ChannelId>,
    /// Permissions, emails, country, time zone, unit, contact, phone (TEN-1).
    #[serde(flatten)]
    profile: ProfileFields,
    #[serde(flatten)]
    #[schemars(skip)]
    unknown: Unknown,
}

/// The profile fields of a request, each optional: absent ones keep their value (or default).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub(crate) struct ProfileFields {
    device_management: Option<bool>,
    rps: Option<bool>,
    master_admin_email: Option<String>,
    register_email: Option<String>,
    country: Option<String>,
    time_zone: Option<String>,
    temperature_unit: Option<fleetpulse_store::TemperatureUnit>,
    contact: Option<String>,
    phone: Option<String>,
}

impl ProfileFields {
    /// `base` with the given fields replaced (text trimmed), checked by
    /// [`EnterpriseProfile::validate`] (400 naming the field).
    fn apply(self, base: &EnterpriseProfile) -> Result<EnterpriseProfile, ApiError> {
        let given = |field: &str, v: Option<String>, old: &str, max: usize| {
            text::optional(field, v, max).map(|v| v.unwrap_or_else(|| old.to_owned()))
        };
        let email = |field: &str, v: Option<String>, old: &str| {
            v.map_or_else(|| Ok(old.to_owned()), |v| text::optional_email(field, &v))
        };
        let profile = EnterpriseProfile {
            device_management: self.device_management.unwrap_or(base.device_management),
            rps: self.rps.unwrap_or(base.rps),
            master_admin_email: email("master_admin_email", self.master_admin_email, &base.master_admin_email)?,
            register_email: email("register_email", self.register_email, &base.register_email)?,
            country: given("country", self.country, &base.country, MAX_COUNTRY_CHARS)?,
            time_zone: given("time_zone", self.time_zone, &base.time_zone, MAX_PROFILE_TIME_ZONE)?,
            temperature_unit: self.temperature_unit.unwrap_or(base.temperature_unit),
            contact: given("contact", self.contact, &base.contact, MAX_PROFILE_CONTACT)?,
            phone: given("phone", self.phone, &base.phone, MAX_PROFILE_PHONE)?,
        };
        profile.validate()?;
        Ok(profile)
    }
}

/// Trims a name and checks it ([`text::name`]).
fn enterprise_name(name: &str) -> Result<String, ApiError> {
    text::name("name", name, MAX_NAME_CHARS)
}

/// A new enterprise with the admin account made for it (TEN-1).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct CreatedEnterprise {
    #[serde(flatten)]
    enterprise: Enterprise,
    /// The enterprise admin account created for the master administrator email (else the
    /// register email); absent when the enterprise has neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_account: Option<crate::routes::tenants::AccountBody>,
}

/// `POST /api/v1/enterprises` `{name, channel_id?, device_management?, rps?,
/// master_admin_email?, register_email?, country?, time_zone?, temperature_unit?, contact?,
/// phone?}`: 201 with the enterprise, its new credential and its admin account.
///
/// TEN-1: with a master administrator email (else a register email) the enterprise gets its
/// enterprise admin account, whose details and generated first password are emailed to it
/// through the outbox (as for accounts created by hand; it changes the password at first login).
/// An email that already has an account is refused (409) before anything is stored.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateEnterprise>,
) -> Result<Response, ApiError> {
    auth.require(Feature::Enterprises)?;
    refuse_unknown(&req.unknown)?;
    let name = enterprise_name(&req.name)?;
    auth.decide(&ctx, Target::NewEnterprise { channel: req.channel_id }).await?;
    let channel_id = req.channel_id.or_else(|| policy::home_channel(&auth.caller));
    let profile = req.profile.apply(&EnterpriseProfile::default())?;
    let admin_email = crate::account_email::enterprise_admin_email(&profile)?;
    let entities = &ctx.api.store.entities;
    if let Some(email) = &admin_email
        && entities.account_by_email(email).await?.is_some()
    {
        return Err(ApiError::Conflict(format!("an account with the email {email} exists already")));
    }
    let new = NewEnterprise { profile, name, credential: secrets::random_hex::<32>(), channel_id };
    let enterprise = entities.create_enterprise(new).await?;
    tracing::info!(message = "Created an enterprise.", enterprise_id = %enterprise.id, by_account = %auth.account.id);
    let admin_account = match admin_email {
        Some(email) => Some(crate::account_email::create_enterprise_admin(&ctx, enterprise.id, email).await?),
        None => None,
    };
    let location = HeaderValue::try_from(format!("/api/v1/enterprises/{}", enterprise.id))
        .map_err(|e| ApiError::Internal(format!("location header: {e}")))?;
    let body = CreatedEnterprise { enterprise, admin_account: admin_account.map(Into::into) };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// The enterprise, or 404 if it does not exist or is outside the caller's scope.
pub(crate) async fn find(ctx: &AppState, auth: &AuthAdmin, id: EnterpriseId) -> Result<Enterprise, ApiError> {
    let mut looked = auth.decide(ctx, Target::Enterprise(id)).await?;
    looked.take_enterprise(id).ok_or(ApiError::NotFound("enterprise"))
}

/// `GET /api/v1/enterprises/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<Enterprise>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct EditEnterprise {
    name: Option<String>,
    #[serde(flatten)]
    profile: ProfileFields,
    #[serde(flatten)]
    #[schemars(skip)]
    unknown: Unknown,
}

/// `PUT /api/v1/enterprises/{id}` with any of the fields of the creation but `channel_id`: the
/// given fields change, the others stay (TEN-2 edit). The enterprise's own accounts may edit
/// everything but its permissions (`device_management`, `rps`: granted by its channel; 403).
async fn edit(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
    Json(req): Json<EditEnterprise>,
) -> Result<Json<Enterprise>, ApiError> {
    auth.require(Feature::Enterprises)?;
    refuse_unknown(&req.unknown)?;
    let current = find(&ctx, &auth, id).await?;
    let name = match req.name {
        Some(name) => enterprise_name(&name)?,
        None => current.name.clone(),
    };
    let profile = req.profile.apply(&current.profile)?;
    let permissions_changed =
        (profile.device_management, profile.rps) != (current.profile.device_management, current.profile.rps);
    if permissions_changed {
        auth.decide(&ctx, Target::EnterprisePermissions(id)).await?;
    }
    let updated = ctx.api.store.entities.update_enterprise(id, name, profile).await?;
    Ok(Json(updated.ok_or(ApiError::NotFound("enterprise"))?))
}

/// `POST /api/v1/enterprises/{id}/authorization`: the managing channel asks the enterprise for
/// the right to act inside it (TEN-3); 200 with the enterprise, now `pending`. Channel accounts
/// only (403 for others); 409 while one is pending or granted.
async fn request_authorization(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<Enterprise>, ApiError> {
    auth.require(Feature::Enterprises)?;
    auth.decide(&ctx, Target::RequestAuthorization(id)).await?;
    use ChannelAuthorization as A;
    let moved = ctx.api.store.entities.set_channel_authorization(id, &[A::None, A::Rejected], A::Pending).await?;
    moved.map(Json).ok_or_else(|| ApiError::Conflict("the authorization is already pending or granted".into()))
}

/// Moves the caller's own enterprise's authorization from one of `from` to `to`: only the
/// enterprise's own accounts (sub-accounts with the `enterprises` feature), and not a channel
/// acting inside it (403); 409 from another state.
async fn answer_authorization(
    ctx: &AppState,
    auth: &AuthAdmin,
    id: EnterpriseId,
    from: &[ChannelAuthorization],
    to: ChannelAuthorization,
) -> Result<Json<Enterprise>, ApiError> {
    auth.require(Feature::Enterprises)?;
    auth.decide(ctx, Target::AnswerAuthorization(id)).await?;
    let moved = ctx.api.store.entities.set_channel_authorization(id, from, to).await?;
    moved.map(Json).ok_or_else(|| {
        let from: Vec<&str> = from.iter().map(|a| a.as_str()).collect();
        ApiError::Conflict(format!("the authorization is not {}", from.join(" or ")))
    })
}

/// `POST /api/v1/enterprises/{id}/authorization/accept`: the enterprise lets its channel act
/// inside it (TEN-3); from `pending` only.
async fn accept_authorization(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<Enterprise>, ApiError> {
    use ChannelAuthorization as A;
    answer_authorization(&ctx, &auth, id, &[A::Pending], A::Accepted).await
}

/// `POST /api/v1/enterprises/{id}/authorization/reject`: the enterprise refuses; from `pending`.
async fn reject_authorization(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<Enterprise>, ApiError> {
    use ChannelAuthorization as A;
    answer_authorization(&ctx, &auth, id, &[A::Pending], A::Rejected).await
}

/// `POST /api/v1/enterprises/{id}/authorization/revoke`: the enterprise withdraws a granted or
/// pending authorization; the channel's sessions acting inside it end at once.
async fn revoke_authorization(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<Enterprise>, ApiError> {
    use ChannelAuthorization as A;
    answer_authorization(&ctx, &auth, id, &[A::Accepted, A::Pending], A::None).await
}

/// `POST /api/v1/enterprises/{id}/act`: a channel account "logs into" an enterprise of its
/// subtree that authorized it (TEN-3): 200 with a NEW session (shaped like the login answer)
/// whose scope is that enterprise; every change made with it is logged as acting for the
/// enterprise. 403 `authorization_required` without the authorization; 403 for other accounts
/// (and for sub-accounts without the `enterprises` feature). From a browser (the session cookie)
/// the acting session comes as the new cookie with its `csrf_token`, and the browser's session ends.
async fn act(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<EnterpriseId>,
) -> Result<Response, ApiError> {
    auth.require(Feature::Enterprises)?;
    auth.decide(&ctx, Target::ActInEnterprise(id)).await?;
    crate::login::act_as(&ctx, auth.account.id, Acting::Enterprise(id), &headers).await
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct StoredSequencesPage {
    devices: Vec<StoredSequences>,
    next_after: Option<DeviceId>,
}

/// `GET /api/v1/enterprises/{id}/stored-sequences?after=&limit=`: per device of the enterprise,
/// ordered by id, how many persisted rows carry a sequence number and which distinct numbers.
async fn stored_sequences(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
    Query(q): Query<PageQuery>,
) -> Result<Json<StoredSequencesPage>, ApiError> {
    let page = page(q.after, q.limit, SEQUENCES_DEFAULT, SEQUENCES_MAX)?;
    let enterprise = find(&ctx, &auth, id).await?;
    let devices = ctx.api.store.stored_sequences(enterprise.id, page).await?;
    let next_after = next_after(&devices, page, |d| d.device_id.0).map(DeviceId);
    Ok(Json(StoredSequencesPage { devices, next_after }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(enterprise_name("  Acme  ").ok().as_deref(), Some("Acme"));
        assert_eq!(enterprise_name(&"é".repeat(128)).ok().map(|n| n.chars().count()), Some(128));
        for bad in ["", "   ", "a\u{7}b"] {
            assert!(enterprise_name(bad).is_err(), "{bad:?}");
        }
        assert!(enterprise_name(&"x".repeat(129)).is_err());
    }
}
