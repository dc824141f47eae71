//! Orders ([`OrderStore`], ORD-1, ORD-2): placing and its refusals, overlapping orders adding up
//! to the allowance over time, cancellation only while pending, the list's filters and pages,
//! and statement totals.

use fleetpulse_proto::OrderId;

use super::*;

const DAY: i64 = 86_400_000;

async fn enterprise(s: &dyn EntityStore, name: &str, channel: Option<ChannelId>) -> EnterpriseId {
    s.create_enterprise(NewEnterprise {
        profile: Default::default(),
        name: name.into(),
        credential: format!("cred-{name}"),
        channel_id: channel,
    })
    .await
    .unwrap()
    .id
}

fn order(e: EnterpriseId, devices: u32, starts: i64, ends: i64, amount: u64) -> NewOrder {
    NewOrder {
        enterprise_id: e,
        seller_channel_id: None,
        package: "Standard".into(),
        max_devices: devices,
        duration_months: 1,
        effective_date: "2026-01-01".into(),
        starts_at: UnixMillis(starts),
        ends_at: UnixMillis(ends),
        amount,
        created_by: AccountId(1),
        created_at: UnixMillis(starts - DAY),
    }
}

fn ids(orders: &[Order]) -> Vec<OrderId> {
    orders.iter().map(|o| o.id).collect()
}

pub(crate) async fn orders(store: &Store) {
    let s = &*store.entities;
    let seller = s.create_channel(new_channel("order-seller", None, true), UnixMillis(1)).await.unwrap();
    let e = enterprise(s, "Order Alpha GmbH", Some(seller.id)).await;
    let other = enterprise(s, "Order Beta AG", None).await;

    // Refusals: bad fields, unknown enterprise or seller; nothing is stored.
    invalid(s.create_order(NewOrder { max_devices: 0, ..order(e, 1, 10 * DAY, 20 * DAY, 0) }).await, "max_devices");
    invalid(
        s.create_order(NewOrder { amount: MAX_ORDER_AMOUNT + 1, ..order(e, 1, 10 * DAY, 20 * DAY, 0) }).await,
        "amount",
    );
    invalid(s.create_order(order(EnterpriseId(u64::MAX >> 1), 1, 10 * DAY, 20 * DAY, 0)).await, "does not exist");
    let unknown_seller =
        NewOrder { seller_channel_id: Some(ChannelId(9_999_999)), ..order(e, 1, 10 * DAY, 20 * DAY, 0) };
    invalid(s.create_order(unknown_seller).await, "does not exist");
    assert_eq!(s.allowance(e, UnixMillis(15 * DAY)).await.unwrap(), 0);

    // Overlapping orders: [10, 40) × 10 devices and [20, 30) × 5 devices.
    let first = s
        .create_order(NewOrder { seller_channel_id: Some(seller.id), ..order(e, 10, 10 * DAY, 40 * DAY, 1_000) })
        .await
        .unwrap();
    assert_eq!(first.enterprise_name, "Order Alpha GmbH");
    assert_eq!(first.seller_channel_id, Some(seller.id));
    assert_eq!(first.cancelled_at, None);
    assert_eq!(s.order(first.id).await.unwrap().as_ref(), Some(&first));
    let second = s.create_order(order(e, 5, 20 * DAY, 30 * DAY, 250)).await.unwrap();
    let pending = s.create_order(order(e, 7, 50 * DAY, 60 * DAY, 700)).await.unwrap();
    let foreign = s.create_order(order(other, 3, 10 * DAY, 40 * DAY, MAX_ORDER_AMOUNT)).await.unwrap();
    for (day, expected) in [(9, 0), (10, 10), (19, 10), (20, 15), (29, 15), (30, 10), (39, 10), (40, 0), (50, 7)] {
        assert_eq!(s.allowance(e, UnixMillis(day * DAY)).await.unwrap(), expected, "day {day}");
    }
    assert_eq!(s.allowance(other, UnixMillis(20 * DAY)).await.unwrap(), 3);

    // Cancelling: only while pending; an active order and an expired one stay.
    let now = UnixMillis(25 * DAY);
    let by = AccountId(2);
    assert!(matches!(s.cancel_order(first.id, by, now).await.unwrap(), Some(OrderCancellation::AlreadyEffective(_))));
    let at_start = s.cancel_order(second.id, by, UnixMillis(20 * DAY)).await.unwrap();
    assert!(matches!(at_start, Some(OrderCancellation::AlreadyEffective(_))), "effective at its start: {at_start:?}");
    let Some(OrderCancellation::Cancelled(cancelled)) = s.cancel_order(pending.id, by, now).await.unwrap() else {
        panic!("a pending order is cancelled");
    };
    assert_eq!((cancelled.cancelled_at, cancelled.cancelled_by), (Some(now), Some(by)));
    assert_eq!(cancelled.status_at(UnixMillis(55 * DAY)), OrderStatus::Cancelled);
    assert!(matches!(s.cancel_order(pending.id, by, now).await.unwrap(), Some(OrderCancellation::AlreadyCancelled(_))));
    assert!(s.cancel_order(OrderId(9_999_999), by, now).await.unwrap().is_none());
    assert_eq!(s.allowance(e, UnixMillis(50 * DAY)).await.unwrap(), 0, "a cancelled order allows nothing");

    // Listing: newest first, paged, every filter.
    let mine = OrderFilter { enterprises: Some(vec![e]), ..OrderFilter::at(now) };
    let all = s.list_orders(&mine, Page::first(10)).await.unwrap();
    assert_eq!(ids(&all), [pending.id, second.id, first.id]);
    let page = s.list_orders(&mine, Page::first(2)).await.unwrap();
    let rest = s.list_orders(&mine, Page { after: page[1].id.0, limit: 2 }).await.unwrap();
    assert_eq!((ids(&page), ids(&rest)), (vec![pending.id, second.id], vec![first.id]));
    let both = OrderFilter { enterprises: Some(vec![e, other]), ..OrderFilter::at(now) };
    assert_eq!(s.list_orders(&both, Page::first(10)).await.unwrap().len(), 4);
    let none = OrderFilter { enterprises: Some(vec![]), ..OrderFilter::at(now) };
    assert!(s.list_orders(&none, Page::first(10)).await.unwrap().is_empty());
    let check = |filter: OrderFilter, expected: Vec<OrderId>| async move {
        let found = s.list_orders(&filter, Page::first(10)).await.unwrap();
        assert_eq!(ids(&found), expected, "{filter:?}");
    };
    check(OrderFilter { order_id: Some(second.id), ..both.clone() }, vec![second.id]).await;
    check(OrderFilter { q: Some("  BETA ".into()), ..both.clone() }, vec![foreign.id]).await;
    check(OrderFilter { status: Some(OrderStatus::Active), ..mine.clone() }, vec![second.id, first.id]).await;
    check(OrderFilter { status: Some(OrderStatus::Cancelled), ..mine.clone() }, vec![pending.id]).await;
    check(OrderFilter { status: Some(OrderStatus::Pending), ..mine.clone() }, vec![]).await;
    let later = OrderFilter { now: UnixMillis(35 * DAY), status: Some(OrderStatus::Expired), ..mine.clone() };
    check(later, vec![second.id]).await;
    let placed = OrderFilter {
        created_from: Some(UnixMillis(19 * DAY)),
        created_to: Some(UnixMillis(20 * DAY)),
        ..mine.clone()
    };
    check(placed, vec![second.id]).await;
    let expiring = OrderFilter { expires_from: Some(UnixMillis(40 * DAY)), ..mine.clone() };
    check(expiring, vec![pending.id, first.id]).await;
    invalid(
        s.list_orders(&OrderFilter { q: Some("x".repeat(MAX_SEARCH_CHARS + 1)), ..mine.clone() }, Page::first(1)).await,
        "search",
    );

    // Totals over every matching order, not a page; sums per enterprise added without overflow.
    let totals = s.order_totals(&both).await.unwrap();
    assert_eq!(totals, OrderTotals { orders: 4, devices: 25, device_months: 25, amount: 1_950 + MAX_ORDER_AMOUNT });
    let active = s.order_totals(&OrderFilter { status: Some(OrderStatus::Active), ..mine.clone() }).await.unwrap();
    assert_eq!(active, OrderTotals { orders: 2, devices: 15, device_months: 15, amount: 1_250 });
    assert_eq!(s.order_totals(&none).await.unwrap(), OrderTotals::default());
}
