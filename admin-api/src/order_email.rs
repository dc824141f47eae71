//! Order emails (ORD-1): when an order is placed or cancelled, its details go to the
//! enterprise's master administrator and to the channel that manages the enterprise, each as an
//! account email in the durable outbox (`OutboxStore::enqueue_outbox`, one message per
//! receiver, keyed by the order, the event and the receiver so that a retried request sends it
//! once). Receivers without an address are skipped; the same address is written to once.

use fleetpulse_mailer::{AccountEmail, AccountEmailPayload};
use fleetpulse_store::{Enterprise, NewOutboxMessage, Order};

use crate::account_email::email_key;
use crate::error::ApiError;
use crate::state::AppState;

/// What happened to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderEvent {
    /// It was placed.
    Placed,
    /// It was cancelled before it took effect.
    Cancelled,
}

impl OrderEvent {
    fn as_str(self) -> &'static str {
        match self {
            OrderEvent::Placed => "placed",
            OrderEvent::Cancelled => "cancelled",
        }
    }
}

/// The addresses an order email goes to: the enterprise's master administrator, then its
/// channel's contact email; blanks left out, each address once (compared ignoring case).
pub(crate) fn receivers(master_admin: &str, channel: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for address in [Some(master_admin), channel].into_iter().flatten() {
        let address = address.trim();
        if !address.is_empty() && !out.iter().any(|a| a.eq_ignore_ascii_case(address)) {
            out.push(address.to_owned());
        }
    }
    out
}

/// Queues the email about `order` of `enterprise` to its receivers; returns how many were
/// newly queued.
pub(crate) async fn queue(
    ctx: &AppState,
    enterprise: &Enterprise,
    order: &Order,
    event: OrderEvent,
) -> Result<usize, ApiError> {
    let entities = &ctx.api.store.entities;
    let channel = match enterprise.channel_id {
        Some(id) => entities.channel(id).await?,
        None => None,
    };
    let now = ctx.clock.now();
    let mut queued = 0;
    for receiver in receivers(&enterprise.profile.master_admin_email, channel.as_ref().map(|c| c.email.as_str())) {
        let mut about = order.id.0.to_be_bytes().to_vec();
        about.push(0);
        about.extend_from_slice(receiver.to_lowercase().as_bytes());
        let key = email_key(&format!("order-{}", event.as_str()), &about);
        let email = AccountEmail::Order {
            event: event.as_str().to_owned(),
            order_id: order.id.0,
            enterprise: enterprise.name.clone(),
            package: order.package.clone(),
            max_devices: order.max_devices,
            duration_months: order.duration_months,
            effective_date: order.effective_date.clone(),
            ends_at: order.ends_at.0,
        };
        let message = NewOutboxMessage {
            key: key.clone(),
            enterprise_id: enterprise.id,
            receiver,
            payload: AccountEmailPayload::new(key, email).to_json(),
            not_before: now,
            item_keys: Vec::new(),
        };
        if entities.enqueue_outbox(message, now).await? {
            queued += 1;
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_skip_blanks_and_repeats() {
        assert_eq!(receivers("boss@e.test", Some("sales@c.test")), ["boss@e.test", "sales@c.test"]);
        assert_eq!(receivers("", Some("sales@c.test")), ["sales@c.test"]);
        assert_eq!(receivers("Same@x.test", Some("same@X.test")), ["Same@x.test"]);
        assert!(receivers(" ", None).is_empty());
    }
}
