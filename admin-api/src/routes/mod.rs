//! The route table ([`all`]): route modules, one per resource, each exposing `routes()`; and the
//! JSON fallback for unknown methods (unknown paths: `console::serve`). Listings share `listing.rs`.

pub(crate) mod account;
pub(crate) mod alarm_notifications;
pub(crate) mod alarm_summary;
pub(crate) mod alarms;
pub(crate) mod channel_strategies;
pub(crate) mod commands;
pub(crate) mod dashboard;
pub(crate) mod dead_letters;
pub(crate) mod device_export;
pub(crate) mod device_imports;
pub(crate) mod device_labels;
pub(crate) mod devices;
pub(crate) mod docs;
pub(crate) mod effective_strategies;
pub(crate) mod enterprises;
pub(crate) mod files;
pub(crate) mod firmware;
pub(crate) mod groups;
pub(crate) mod incidents;
pub(crate) mod inventory;
pub(crate) mod listing;
pub(crate) mod nodes;
pub(crate) mod oplog;
pub(crate) mod ops;
pub(crate) mod orders;
pub(crate) mod profiles;
pub(crate) mod relays;
pub(crate) mod rps;
pub(crate) mod session;
pub(crate) mod sites;
pub(crate) mod statements;
pub(crate) mod strategies;
pub(crate) mod strategy_receivers;
pub(crate) mod tasks;
pub(crate) mod tenant_admin;
pub(crate) mod tenants;
pub(crate) mod windows;

use axum::routing::MethodRouter;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of the API: the router is built from exactly this table, so tests can walk it
/// (the authorization matrix fails when a route is missing from it).
pub(crate) fn all() -> Vec<(&'static str, MethodRouter<AppState>)> {
    [
        ops::routes(),
        session::routes(),
        enterprises::routes(),
        devices::routes(),
        commands::routes(),
        files::routes(),
        firmware::routes(),
        dashboard::routes(),
        device_labels::routes(),
        alarms::routes(),
        alarm_summary::routes(),
        strategies::routes(),
        channel_strategies::routes(),
        effective_strategies::routes(),
        strategy_receivers::routes(),
        tasks::routes(),
        windows::routes(),
        alarm_notifications::routes(),
        incidents::routes(),
        sites::routes(),
        profiles::routes(),
        groups::routes(),
        orders::routes(),
        statements::routes(),
        oplog::routes(),
        tenants::routes(),
        tenant_admin::routes(),
        rps::routes(),
        dead_letters::routes(),
        relays::routes(),
        account::routes(),
        nodes::routes(),
        docs::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Fallback for a known path with a method it does not serve: 405 `method_not_allowed`.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
