//! Licence status per device (`LicenceStore`, ORD-3): which of an enterprise's devices its
//! orders' allowance covers, kept in each device row (`devices.licence`) so that the device
//! list filters by it, the detail shows it and the dashboard counts it without working it out.
//!
//! The rule (stable, stated once here):
//! - An enterprise is *metered* once one of its orders has started (an active or expired order,
//!   not a cancelled one). Before that its devices are `unknown` (no licence needed yet: a
//!   pending order licenses nothing and takes nothing away).
//! - In a metered enterprise the `allowance` oldest devices (by device id, that is, in the order
//!   they were registered) are `licensed`, every later one `unlicensed`. The allowance is the sum
//!   of `max_devices` of the orders active now (0 once they have all expired).
//!
//! Kept incrementally, never worked out on a read:
//! - a new device (always the newest) is licensed if the enterprise has fewer licensed devices
//!   than its allowance — one row read, by a trigger in the registering transaction;
//! - deleting a licensed device, or moving a device between enterprises, re-ranks the
//!   enterprises concerned (trigger, same transaction);
//! - placing or cancelling an order re-ranks its enterprise in the order's transaction;
//! - an order starting or expiring changes the allowance at an instant no request marks: each
//!   enterprise's row keeps `valid_until`, the next such instant, and
//!   [`LicenceStore::refresh_licences`] re-ranks the enterprises whose instant has passed (an
//!   indexed range read; nothing when none has), which the API calls before it reads statuses.

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Order, Result};

/// Most enterprises one [`LicenceStore::refresh_licences`] re-ranks (the rest on the next call).
pub const MAX_LICENCE_REFRESH: u32 = 100;

/// A device's licence status (ORD-3, PDMS-E's Licensed / Unlicensed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LicenceStatus {
    /// Covered by the enterprise's allowance.
    Licensed,
    /// Beyond the allowance: it keeps reporting, but gets no commands, pushes or upgrades.
    Unlicensed,
    /// The enterprise is not metered (no order of it has started).
    Unknown,
}

impl LicenceStatus {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenceStatus::Licensed => "licensed",
            LicenceStatus::Unlicensed => "unlicensed",
            LicenceStatus::Unknown => "unknown",
        }
    }

    /// The status of a stored name (anything unknown reads as `unknown`).
    pub fn parse(s: &str) -> LicenceStatus {
        match s {
            "licensed" => LicenceStatus::Licensed,
            "unlicensed" => LicenceStatus::Unlicensed,
            _ => LicenceStatus::Unknown,
        }
    }
}

/// An enterprise's licences now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LicenceCounts {
    /// Whether an order of the enterprise has started.
    pub metered: bool,
    /// Devices its active orders allow.
    pub allowance: u64,
    /// Devices licensed.
    pub licensed: u64,
    /// Devices beyond the allowance.
    pub unlicensed: u64,
}

/// Licences of devices.
#[async_trait]
pub trait LicenceStore: Send + Sync + 'static {
    /// Re-ranks the enterprises whose allowance changed by `now` (an order started or expired
    /// since they were ranked), at most [`MAX_LICENCE_REFRESH`]; returns how many.
    async fn refresh_licences(&self, now: UnixMillis) -> Result<u64>;
    /// The device's status (`None`: no such device).
    async fn device_licence(&self, device: DeviceId) -> Result<Option<LicenceStatus>>;
    /// The enterprise's allowance and counts.
    async fn licence_counts(&self, enterprise: EnterpriseId) -> Result<LicenceCounts>;
}

/// What an enterprise's orders make of its licences at `now` ([`licence_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LicenceState {
    /// An order (not cancelled) has started.
    pub metered: bool,
    /// Sum of `max_devices` of the active orders.
    pub allowance: u64,
    /// The next instant after `now` at which an order starts or ends (`i64::MAX`: none).
    pub valid_until: UnixMillis,
}

/// The licence state of an enterprise with these orders at `now` (sans-I/O; the rule of the
/// module documentation).
pub fn licence_state(orders: &[Order], now: UnixMillis) -> LicenceState {
    let mut state = LicenceState { metered: false, allowance: 0, valid_until: UnixMillis(i64::MAX) };
    for o in orders.iter().filter(|o| o.cancelled_at.is_none()) {
        if o.starts_at <= now {
            state.metered = true;
            if now < o.ends_at {
                state.allowance = state.allowance.saturating_add(u64::from(o.max_devices));
            }
        }
        for edge in [o.starts_at, o.ends_at] {
            if edge > now && edge < state.valid_until {
                state.valid_until = edge;
            }
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::{AccountId, OrderId};

    fn order(devices: u32, starts: i64, ends: i64, cancelled: bool) -> Order {
        Order {
            id: OrderId(1),
            enterprise_id: EnterpriseId(1),
            enterprise_name: "E".into(),
            seller_channel_id: None,
            package: "P".into(),
            max_devices: devices,
            duration_months: 1,
            effective_date: "2026-01-01".into(),
            starts_at: UnixMillis(starts),
            ends_at: UnixMillis(ends),
            amount: 0,
            created_by: AccountId(1),
            created_at: UnixMillis(0),
            cancelled_at: cancelled.then_some(UnixMillis(1)),
            cancelled_by: None,
        }
    }

    #[test]
    fn the_state_follows_started_orders_and_names_the_next_change() {
        let never = UnixMillis(i64::MAX);
        let check = |orders: &[Order], now: i64, expected: (bool, u64, UnixMillis)| {
            let s = licence_state(orders, UnixMillis(now));
            assert_eq!((s.metered, s.allowance, s.valid_until), expected, "at {now}: {orders:?}");
        };
        check(&[], 5, (false, 0, never));
        let orders = [order(10, 10, 40, false), order(5, 20, 30, false), order(99, 15, 50, true)];
        check(&orders, 5, (false, 0, UnixMillis(10)));
        check(&orders, 10, (true, 10, UnixMillis(20)));
        check(&orders, 25, (true, 15, UnixMillis(30)));
        check(&orders, 30, (true, 10, UnixMillis(40)));
        check(&orders, 45, (true, 0, never));
        // Overlapping maximum orders add up without overflowing.
        let many: Vec<Order> = (0..10).map(|_| order(u32::MAX, 0, 100, false)).collect();
        check(&many, 1, (true, 10 * u64::from(u32::MAX), UnixMillis(100)));
    }
}
