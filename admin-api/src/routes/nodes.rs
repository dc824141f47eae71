//! `/api/v1/nodes` (issue 16): the ingest nodes sharing the scale-out store, their leases and the
//! device sessions each holds; the platform's only (the policy's `Target::Deployment`).

use axum::extract::State;
use axum::routing::{MethodRouter, get};
use fleetpulse_store::NodeRow;
use serde::Serialize;

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::Json;
use crate::policy::Target;
use crate::state::AppState;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/nodes", get(list))]
}

/// The nodes, by id.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct NodesPage {
    /// Whether several nodes may share the store (the scale-out store); false: this process is
    /// the only node (embedded store) and `items` is empty.
    pub(crate) clustered: bool,
    /// Every node that ever joined: up (lease current) or down (lease lapsed, its devices taken
    /// offline unless they connected elsewhere).
    pub(crate) items: Vec<NodeRow>,
}

/// `GET /api/v1/nodes`: 403 for any caller but the platform.
async fn list(auth: AuthAdmin, State(ctx): State<AppState>) -> Result<Json<NodesPage>, ApiError> {
    auth.decide(&ctx, Target::Deployment).await?;
    Ok(Json(match &ctx.api.cluster {
        Some(cluster) => NodesPage { clustered: true, items: cluster.list_nodes().await? },
        None => NodesPage { clustered: false, items: Vec::new() },
    }))
}
