//! Plans historical orders: when (weekday and hour patterns), where, who, what, how paid,
//! and how each ends (completed, or cancelled while placed or preparing). Pure and seeded:
//! the same inputs give the same plan. The plan is then written through the API's order
//! transaction and status machine.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;

use super::menu::{
    CATEGORY_WEIGHTS, LUNCH_SANDWICH_WEIGHT, OPENING_HOUR, WEEKDAY_HOURS, WEEKEND_HOURS,
};
use super::SeedError;
use crate::domain::order::{
    NewOrder, NewOrderItem, OrderDraft, OrderStatus, PaymentMethod, StatusChange,
};

/// Share of orders without a customer.
const WALK_IN_SHARE: f64 = 0.25;
/// Share of orders cancelled.
const CANCELLED_SHARE: f64 = 0.05;

/// What exists in the database to build orders from.
#[derive(Debug, Default)]
pub(super) struct Shop {
    /// (store id, share of orders)
    pub stores: Vec<(i64, f64)>,
    /// Active employees by store; `None` holds those with no store.
    pub staff: HashMap<Option<i64>, Vec<i64>>,
    /// Available products by category.
    pub menu: HashMap<String, Vec<i64>>,
    pub customers: Vec<i64>,
}

/// One planned order and the status changes that follow it.
#[derive(Debug, Clone)]
pub(super) struct PlannedOrder {
    pub draft: OrderDraft,
    /// Changes in the order they happen (at most three).
    pub changes: Vec<StatusChange>,
}

/// Plans `count` orders spread over the `days` whole days before `today`.
pub(super) fn plan_orders(
    shop: &Shop,
    count: u32,
    days: u32,
    today: NaiveDate,
    rng: &mut impl Rng,
) -> Result<Vec<PlannedOrder>, SeedError> {
    let first_day = today - Duration::days(i64::from(days));
    let day_weights: Vec<f64> = (0..days)
        .map(|d| {
            let date = first_day + Duration::days(i64::from(d));
            let weekday = match date.weekday() {
                Weekday::Sat => 1.4,
                Weekday::Sun => 1.25,
                _ => 1.0,
            };
            // a gently growing business
            weekday * (0.9 + 0.2 * f64::from(d) / f64::from(days.max(1)))
        })
        .collect();
    if days == 0 {
        return Err(SeedError::NoDays);
    }
    let day_pick = WeightedIndex::new(&day_weights).map_err(|_| SeedError::NoDays)?;
    let weekday_hours =
        WeightedIndex::new(WEEKDAY_HOURS).map_err(|_| SeedError::Missing("hours"))?;
    let weekend_hours =
        WeightedIndex::new(WEEKEND_HOURS).map_err(|_| SeedError::Missing("hours"))?;
    let store_pick = WeightedIndex::new(shop.stores.iter().map(|s| s.1))
        .map_err(|_| SeedError::Missing("a store"))?;
    let categories: Vec<(&str, u32)> = CATEGORY_WEIGHTS
        .iter()
        .copied()
        .filter(|(c, _)| shop.menu.get(*c).is_some_and(|p| !p.is_empty()))
        .collect();
    if categories.is_empty() {
        return Err(SeedError::Missing("an available product"));
    }
    let any_staff: Vec<i64> = shop.staff.values().flatten().copied().collect();
    if any_staff.is_empty() {
        return Err(SeedError::Missing("an active employee"));
    }

    let mut plans = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let date = first_day + Duration::days(day_pick.sample(rng) as i64);
        let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        let hour = OPENING_HOUR
            + if weekend {
                weekend_hours.sample(rng)
            } else {
                weekday_hours.sample(rng)
            } as u32;
        let ordered_at = Utc.from_utc_datetime(
            &date
                .and_hms_opt(hour, rng.gen_range(0..60), rng.gen_range(0..60))
                .unwrap_or_default(),
        );

        let store_id = shop.stores[store_pick.sample(rng)].0;
        let staff = shop
            .staff
            .get(&Some(store_id))
            .filter(|s| !s.is_empty())
            .unwrap_or(&any_staff);
        let employee_id = staff[rng.gen_range(0..staff.len())];
        let customer_id = if shop.customers.is_empty() || rng.gen_bool(WALK_IN_SHARE) {
            None
        } else {
            // regulars: low indices come back far more often
            let u: f64 = rng.gen();
            let i = ((u * u) * shop.customers.len() as f64) as usize;
            shop.customers.get(i).copied()
        };
        let payment_method = match rng.gen_range(0..100) {
            0..=59 => PaymentMethod::Card,
            60..=84 => PaymentMethod::Mobile,
            _ => PaymentMethod::Cash,
        };
        let items = plan_items(shop, &categories, hour, rng);
        let draft = OrderDraft::new(
            NewOrder {
                customer_id,
                employee_id,
                store_id,
                payment_method,
                items,
                session_id: None,
            },
            ordered_at,
        )?;
        let changes = plan_fate(draft.id, ordered_at, rng);
        plans.push(PlannedOrder { draft, changes });
    }
    plans.sort_by_key(|p| p.draft.ordered_at);
    Ok(plans)
}

/// 1–4 lines (mostly one), distinct products, mostly quantity 1.
fn plan_items(
    shop: &Shop,
    categories: &[(&str, u32)],
    hour: u32,
    rng: &mut impl Rng,
) -> Vec<NewOrderItem> {
    let lunch = (11..15).contains(&hour);
    let weights: Vec<u32> = categories
        .iter()
        .map(|&(c, w)| {
            if lunch && c == "sandwiches" {
                LUNCH_SANDWICH_WEIGHT
            } else {
                w
            }
        })
        .collect();
    let Ok(category_pick) = WeightedIndex::new(&weights) else {
        return Vec::new();
    };
    let lines = match rng.gen_range(0..100) {
        0..=49 => 1,
        50..=79 => 2,
        80..=92 => 3,
        _ => 4,
    };
    let mut items: Vec<NewOrderItem> = Vec::with_capacity(lines);
    for _ in 0..lines {
        let products = &shop.menu[categories[category_pick.sample(rng)].0];
        let product_id = products[rng.gen_range(0..products.len())];
        if items.iter().any(|i| i.product_id == product_id) {
            continue;
        }
        let quantity = match rng.gen_range(0..100) {
            0..=84 => 1,
            85..=96 => 2,
            _ => 3,
        };
        items.push(NewOrderItem {
            product_id,
            quantity,
        });
    }
    items
}

/// Most orders complete a few minutes after they are placed; some are cancelled.
fn plan_fate(order_id: uuid::Uuid, placed: DateTime<Utc>, rng: &mut impl Rng) -> Vec<StatusChange> {
    let mut at = placed;
    let mut step = |status, min_s: i64, max_s: i64, rng: &mut dyn rand::RngCore| {
        at += Duration::seconds(rng.gen_range(min_s..=max_s));
        StatusChange {
            order_id,
            status,
            at,
        }
    };
    if rng.gen_bool(CANCELLED_SHARE) {
        if rng.gen_bool(0.6) {
            vec![step(OrderStatus::Cancelled, 30, 300, rng)]
        } else {
            vec![
                step(OrderStatus::Preparing, 30, 180, rng),
                step(OrderStatus::Cancelled, 30, 240, rng),
            ]
        }
    } else {
        vec![
            step(OrderStatus::Preparing, 30, 180, rng),
            step(OrderStatus::Ready, 90, 420, rng),
            step(OrderStatus::Completed, 30, 300, rng),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn shop() -> Shop {
        Shop {
            stores: vec![(1, 0.7), (2, 0.3)],
            staff: [(Some(1), vec![10, 11]), (Some(2), vec![12])].into(),
            menu: [
                ("coffee".to_owned(), vec![100, 101]),
                ("pastries".to_owned(), vec![200]),
                ("sandwiches".to_owned(), vec![300]),
            ]
            .into(),
            customers: (1..=50).collect(),
        }
    }

    #[test]
    fn plans_follow_the_patterns_and_the_status_machine() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let today = NaiveDate::from_ymd_opt(2024, 5, 20).unwrap();
        let plans = plan_orders(&shop(), 4000, 28, today, &mut rng).unwrap();
        assert_eq!(plans.len(), 4000);
        let start =
            Utc.from_utc_datetime(&(today - Duration::days(28)).and_hms_opt(0, 0, 0).unwrap());
        let end = Utc.from_utc_datetime(&today.and_hms_opt(0, 0, 0).unwrap());
        assert!(plans
            .windows(2)
            .all(|w| w[0].draft.ordered_at <= w[1].draft.ordered_at));
        assert!(plans
            .iter()
            .all(|p| p.draft.ordered_at >= start && p.draft.ordered_at < end));

        let by_hour = |h: u32| {
            plans
                .iter()
                .filter(|p| p.draft.ordered_at.format("%H").to_string() == format!("{h:02}"))
                .count()
        };
        assert!(by_hour(8) > by_hour(15) * 2, "morning peak");
        assert!(by_hour(12) > by_hour(15), "lunch bump");
        let walk_ins = plans
            .iter()
            .filter(|p| p.draft.customer_id.is_none())
            .count();
        assert!((800..1200).contains(&walk_ins), "walk-ins {walk_ins}");

        for p in &plans {
            assert!(!p.draft.lines.is_empty() && p.draft.lines.len() <= 4);
            let mut from = OrderStatus::Placed;
            let mut at = p.draft.ordered_at;
            for c in &p.changes {
                assert!(from.can_become(c.status) && c.at > at);
                (from, at) = (c.status, c.at);
            }
            assert!(matches!(
                from,
                OrderStatus::Completed | OrderStatus::Cancelled
            ));
            let staff = if p.draft.store_id == 1 {
                vec![10, 11]
            } else {
                vec![12]
            };
            assert!(staff.contains(&p.draft.employee_id));
        }
        let cancelled = plans
            .iter()
            .filter(|p| p.changes.last().unwrap().status == OrderStatus::Cancelled)
            .count();
        assert!((100..320).contains(&cancelled), "cancelled {cancelled}");
    }
}
