//! Licence statuses brought up to date before they are read (ORD-3): an order starting or
//! expiring changes an enterprise's allowance at an instant no request marks, so the routes that
//! show or filter by licence status first ask the store to re-rank the enterprises whose next
//! change has passed (`LicenceStore::refresh_licences`: an indexed range read, nothing more when
//! none has). What an unlicensed device may still do is decided in the store (`CommandRefusal::
//! Unlicensed`) and documented in `docs/api/orders.md`.

use crate::error::ApiError;
use crate::state::AppState;

/// Re-ranks the enterprises whose allowance changed by now (at most
/// `fleetpulse_store::MAX_LICENCE_REFRESH` per call; a later read takes the rest).
pub(crate) async fn settle(ctx: &AppState) -> Result<(), ApiError> {
    let refreshed = ctx.api.store.entities.refresh_licences(ctx.clock.now()).await?;
    if refreshed > 0 {
        tracing::debug!(message = "Licences re-ranked.", enterprises = refreshed);
    }
    Ok(())
}
