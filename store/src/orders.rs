//! Orders and statements (`OrderStore`, ORD-1, ORD-2): what a channel (or the platform) sold an
//! enterprise — a package with a maximum number of devices for a number of months from an
//! effective date — its cancellation before it takes effect, the searches of the order and
//! statement lists with their totals, and an enterprise's device allowance at a time.
//!
//! Choices where the issue is silent:
//! - An order's validity is the half-open interval [`Order::starts_at`, `Order::ends_at`): local
//!   midnight of the effective date in the enterprise's time zone to local midnight of the same
//!   day `duration_months` later. The API computes both from the enterprise's zone when the order
//!   is placed; the store keeps them as instants, so a later change of the zone moves no order.
//! - Status is a function of time ([`Order::status_at`]): `pending` before the start, `active`
//!   within the validity, `expired` after it, `cancelled` once cancelled (only while pending).
//! - The allowance of an enterprise at `now` is the sum of `max_devices` of its active orders
//!   (overlapping orders accumulate, as the guide says).
//! - An order stays with its enterprise: moving the enterprise to another channel moves its orders'
//!   visibility with it; [`Order::seller_channel_id`] keeps who sold it.
//! - Amounts are whole minor units of one currency (cents); counts and amounts are bounded
//!   ([`MAX_ORDER_DEVICES`], [`MAX_ORDER_MONTHS`], [`MAX_ORDER_AMOUNT`],
//!   [`MAX_ORDERS_PER_ENTERPRISE`]) so that an enterprise's sums fit in 64 bits; totals over many
//!   enterprises are added in 128 bits and saturate at `u64::MAX`.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, OrderId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Page, Result, StoreError, check_text};

/// Most devices one order may allow.
pub const MAX_ORDER_DEVICES: u32 = 1_000_000;
/// Longest duration of one order, in months (ten years).
pub const MAX_ORDER_MONTHS: u32 = 120;
/// Largest amount of one order, in minor units (10^12: ten billion in a currency of cents).
pub const MAX_ORDER_AMOUNT: u64 = 1_000_000_000_000;
/// Most orders one enterprise may have (cancelled ones included).
pub const MAX_ORDERS_PER_ENTERPRISE: u64 = 10_000;
/// Longest package name, in characters.
pub const MAX_PACKAGE_NAME: usize = 64;
/// Most rows one [`OrderStore::list_orders`] returns, whatever limit it is given.
pub const MAX_ORDER_PAGE: u32 = 500;
/// Most enterprise ids an [`OrderFilter`] may name.
pub const MAX_ORDER_ENTERPRISE_FILTER: usize = 10_000;

/// Orders, statements and allowances.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Places an order. [`StoreError::InvalidInput`] (nothing stored) when
    /// [`NewOrder::validate`] refuses it or its enterprise does not exist;
    /// [`StoreError::LimitExceeded`] when the enterprise already has
    /// [`MAX_ORDERS_PER_ENTERPRISE`] orders.
    async fn create_order(&self, new: NewOrder) -> Result<Order>;
    /// The order with this id.
    async fn order(&self, id: OrderId) -> Result<Option<Order>>;
    /// Orders matching the filter, newest first (by id): ids below `page.after` when it is above
    /// 0; at most `page.limit`, never more than [`MAX_ORDER_PAGE`]. [`StoreError::InvalidInput`]
    /// for a filter [`OrderFilter::validate`] refuses.
    async fn list_orders(&self, filter: &OrderFilter, page: Page) -> Result<Vec<Order>>;
    /// The totals of every order matching the filter (not one page).
    async fn order_totals(&self, filter: &OrderFilter) -> Result<OrderTotals>;
    /// Cancels the order at `now` if it is still pending (its start is after `now`), in one
    /// conditional write; otherwise nothing changes and the answer says why. `None` for an
    /// unknown order.
    async fn cancel_order(&self, id: OrderId, by: AccountId, now: UnixMillis) -> Result<Option<OrderCancellation>>;
    /// The enterprise's device allowance at `now`: the sum of `max_devices` of its orders active
    /// then (0 with none).
    async fn allowance(&self, enterprise: EnterpriseId, now: UnixMillis) -> Result<u64>;
}

/// Where an order stands at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Not yet effective; may be cancelled.
    Pending,
    /// Effective: counts towards the allowance.
    Active,
    /// Past its validity.
    Expired,
    /// Cancelled before it took effect.
    Cancelled,
}

impl OrderStatus {
    /// The name the API and CSV use.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Active => "active",
            OrderStatus::Expired => "expired",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// An order to place ([`OrderStore::create_order`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The enterprise it is for.
    pub enterprise_id: EnterpriseId,
    /// The channel that sold it (`None`: the platform).
    pub seller_channel_id: Option<ChannelId>,
    /// The package's name, 1 to [`MAX_PACKAGE_NAME`] characters.
    pub package: String,
    /// Devices it allows, 1 to [`MAX_ORDER_DEVICES`].
    pub max_devices: u32,
    /// Months it lasts, 1 to [`MAX_ORDER_MONTHS`].
    pub duration_months: u32,
    /// The effective date in the enterprise's time zone (`YYYY-MM-DD`).
    pub effective_date: String,
    /// The instant it takes effect (local midnight of the effective date).
    pub starts_at: UnixMillis,
    /// The instant it expires (exclusive), after `starts_at`.
    pub ends_at: UnixMillis,
    /// Its amount in minor units, at most [`MAX_ORDER_AMOUNT`].
    pub amount: u64,
    /// Who placed it.
    pub created_by: AccountId,
    /// When.
    pub created_at: UnixMillis,
}

impl NewOrder {
    /// Why the order cannot be placed on its own: a package name that is empty, too long or
    /// holds control characters; devices, months or amount outside their bounds; a date not of
    /// the form `YYYY-MM-DD`; an end not after the start.
    pub fn validate(&self) -> Result<()> {
        check_text("package", &self.package, MAX_PACKAGE_NAME)?;
        if self.package.trim().is_empty() {
            return Err(StoreError::InvalidInput("package must not be empty".into()));
        }
        if !(1..=MAX_ORDER_DEVICES).contains(&self.max_devices) {
            return Err(StoreError::InvalidInput(format!("max_devices must be 1 to {MAX_ORDER_DEVICES}")));
        }
        if !(1..=MAX_ORDER_MONTHS).contains(&self.duration_months) {
            return Err(StoreError::InvalidInput(format!("duration_months must be 1 to {MAX_ORDER_MONTHS}")));
        }
        if self.amount > MAX_ORDER_AMOUNT {
            return Err(StoreError::InvalidInput(format!("amount must be at most {MAX_ORDER_AMOUNT}")));
        }
        if !is_date(&self.effective_date) {
            return Err(StoreError::InvalidInput("effective_date must be YYYY-MM-DD".into()));
        }
        if self.ends_at <= self.starts_at {
            return Err(StoreError::InvalidInput("an order must end after it starts".into()));
        }
        Ok(())
    }
}

/// Whether `s` has the form `YYYY-MM-DD` (digits; the calendar is the API's to check).
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Order {
    /// Identifier (never reused).
    pub id: OrderId,
    /// The enterprise it is for.
    pub enterprise_id: EnterpriseId,
    /// The enterprise's name now.
    pub enterprise_name: String,
    /// The channel that sold it (`None`: the platform).
    pub seller_channel_id: Option<ChannelId>,
    /// The package's name.
    pub package: String,
    /// Devices it allows.
    pub max_devices: u32,
    /// Months it lasts.
    pub duration_months: u32,
    /// The effective date in the enterprise's time zone.
    pub effective_date: String,
    /// When it takes effect.
    pub starts_at: UnixMillis,
    /// When it expires (exclusive).
    pub ends_at: UnixMillis,
    /// Its amount in minor units.
    pub amount: u64,
    /// Who placed it.
    pub created_by: AccountId,
    /// When.
    pub created_at: UnixMillis,
    /// When it was cancelled.
    pub cancelled_at: Option<UnixMillis>,
    /// Who cancelled it.
    pub cancelled_by: Option<AccountId>,
}

impl Order {
    /// Where the order stands at `now`.
    pub fn status_at(&self, now: UnixMillis) -> OrderStatus {
        if self.cancelled_at.is_some() {
            OrderStatus::Cancelled
        } else if now < self.starts_at {
            OrderStatus::Pending
        } else if now < self.ends_at {
            OrderStatus::Active
        } else {
            OrderStatus::Expired
        }
    }
}

/// What the order and statement lists search by; every field narrows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only these enterprises (`None`: every one; at most [`MAX_ORDER_ENTERPRISE_FILTER`]).
    pub enterprises: Option<Vec<EnterpriseId>>,
    /// Only this order.
    pub order_id: Option<OrderId>,
    /// Enterprise name containing this, ignoring case.
    pub q: Option<String>,
    /// Only orders with this status at `now`.
    pub status: Option<OrderStatus>,
    /// The time statuses are taken at.
    pub now: UnixMillis,
    /// Placed at or after.
    pub created_from: Option<UnixMillis>,
    /// Placed before.
    pub created_to: Option<UnixMillis>,
    /// Expiring at or after.
    pub expires_from: Option<UnixMillis>,
    /// Expiring before.
    pub expires_to: Option<UnixMillis>,
}

impl OrderFilter {
    /// Every order, statuses taken at `now`.
    pub fn at(now: UnixMillis) -> OrderFilter {
        OrderFilter {
            enterprises: None,
            order_id: None,
            q: None,
            status: None,
            now,
            created_from: None,
            created_to: None,
            expires_from: None,
            expires_to: None,
        }
    }

    /// [`StoreError::InvalidInput`] for too many enterprises or a bad search.
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = &self.enterprises {
            crate::check_bound("enterprise ids", e.len(), MAX_ORDER_ENTERPRISE_FILTER)?;
        }
        crate::search_needle(self.q.as_deref())?;
        Ok(())
    }

    /// The search as the store compares it (lower-cased), checked.
    pub(crate) fn needle(&self) -> Result<Option<String>> {
        crate::search_needle(self.q.as_deref())
    }
}

/// The totals of a statement ([`OrderStore::order_totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OrderTotals {
    /// Orders.
    pub orders: u64,
    /// Sum of their maximum devices.
    pub devices: u64,
    /// Sum of devices × months.
    pub device_months: u64,
    /// Sum of their amounts (minor units).
    pub amount: u64,
}

impl OrderTotals {
    /// Adds per-enterprise sums (each within 64 bits by the bounds) in 128 bits, saturating at
    /// `u64::MAX`.
    pub(crate) fn sum(parts: impl IntoIterator<Item = [u64; 4]>) -> OrderTotals {
        let mut t = [0u128; 4];
        for part in parts {
            for (sum, v) in t.iter_mut().zip(part) {
                *sum = sum.saturating_add(u128::from(v));
            }
        }
        let cap = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        OrderTotals { orders: cap(t[0]), devices: cap(t[1]), device_months: cap(t[2]), amount: cap(t[3]) }
    }
}

/// What [`OrderStore::cancel_order`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCancellation {
    /// Cancelled now.
    Cancelled(Order),
    /// Refused: the order has taken effect (active or expired).
    AlreadyEffective(Order),
    /// Refused: it was cancelled before.
    AlreadyCancelled(Order),
}

/// The code of a status in the backends' filters (`NULL`: any status).
pub(crate) fn status_code(status: Option<OrderStatus>) -> Option<i64> {
    status.map(|s| match s {
        OrderStatus::Pending => 0,
        OrderStatus::Active => 1,
        OrderStatus::Expired => 2,
        OrderStatus::Cancelled => 3,
    })
}

/// The refusal of an order beyond [`MAX_ORDERS_PER_ENTERPRISE`].
pub(crate) fn too_many_orders(enterprise: EnterpriseId) -> StoreError {
    StoreError::LimitExceeded(format!("enterprise {enterprise} already has {MAX_ORDERS_PER_ENTERPRISE} orders"))
}

/// The outcome of a cancellation that changed nothing, from the order as it is.
pub(crate) fn refused_cancellation(order: Order) -> OrderCancellation {
    if order.cancelled_at.is_some() {
        OrderCancellation::AlreadyCancelled(order)
    } else {
        OrderCancellation::AlreadyEffective(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> NewOrder {
        NewOrder {
            enterprise_id: EnterpriseId(1),
            seller_channel_id: None,
            package: "Standard".into(),
            max_devices: 10,
            duration_months: 12,
            effective_date: "2026-01-01".into(),
            starts_at: UnixMillis(100),
            ends_at: UnixMillis(200),
            amount: 5,
            created_by: AccountId(1),
            created_at: UnixMillis(1),
        }
    }

    #[test]
    fn validation_bounds_every_field() {
        assert!(order().validate().is_ok());
        let max = NewOrder {
            max_devices: MAX_ORDER_DEVICES,
            duration_months: MAX_ORDER_MONTHS,
            amount: MAX_ORDER_AMOUNT,
            ..order()
        };
        assert!(max.validate().is_ok());
        for bad in [
            NewOrder { package: String::new(), ..order() },
            NewOrder { package: "  ".into(), ..order() },
            NewOrder { package: "x".repeat(MAX_PACKAGE_NAME + 1), ..order() },
            NewOrder { package: "a\nb".into(), ..order() },
            NewOrder { max_devices: 0, ..order() },
            NewOrder { max_devices: MAX_ORDER_DEVICES + 1, ..order() },
            NewOrder { duration_months: 0, ..order() },
            NewOrder { duration_months: MAX_ORDER_MONTHS + 1, ..order() },
            NewOrder { amount: MAX_ORDER_AMOUNT + 1, ..order() },
            NewOrder { effective_date: "2026-1-01".into(), ..order() },
            NewOrder { effective_date: "2026/01/01".into(), ..order() },
            NewOrder { ends_at: UnixMillis(100), ..order() },
        ] {
            assert!(matches!(bad.validate(), Err(StoreError::InvalidInput(_))), "{bad:?}");
        }
    }

    #[test]
    fn status_follows_time_and_cancellation() {
        let o = order();
        let placed = Order {
            id: OrderId(1),
            enterprise_id: o.enterprise_id,
            enterprise_name: "E".into(),
            seller_channel_id: None,
            package: o.package,
            max_devices: o.max_devices,
            duration_months: o.duration_months,
            effective_date: o.effective_date,
            starts_at: o.starts_at,
            ends_at: o.ends_at,
            amount: o.amount,
            created_by: o.created_by,
            created_at: o.created_at,
            cancelled_at: None,
            cancelled_by: None,
        };
        assert_eq!(placed.status_at(UnixMillis(99)), OrderStatus::Pending);
        assert_eq!(placed.status_at(UnixMillis(100)), OrderStatus::Active);
        assert_eq!(placed.status_at(UnixMillis(199)), OrderStatus::Active);
        assert_eq!(placed.status_at(UnixMillis(200)), OrderStatus::Expired);
        let cancelled = Order { cancelled_at: Some(UnixMillis(50)), ..placed };
        assert_eq!(cancelled.status_at(UnixMillis(150)), OrderStatus::Cancelled);
    }

    #[test]
    fn totals_saturate_instead_of_overflowing() {
        let t = OrderTotals::sum([[1, 2, 3, u64::MAX], [1, 2, 3, u64::MAX]]);
        assert_eq!(t, OrderTotals { orders: 2, devices: 4, device_months: 6, amount: u64::MAX });
    }
}
