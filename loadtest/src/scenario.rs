//! The Monday-morning rush as pure choices: which request comes next, what goes in a basket,
//! what an order's next status is. No I/O here, so it is unit-tested and reproducible.

use rand::seq::SliceRandom;
use rand::Rng;

/// The mix of requests a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Orders placed, advanced, cancelled, looked up and now and then deleted; new customers
    /// and products; the odd price change.
    Rush,
    /// Only `POST /orders` (for measuring orders per second and freshness alone).
    Orders,
    /// Menu browsing: each visit a session of impressions and a few clicks (`POST /events`),
    /// a third of the visits with a click ending in an order carrying the session id.
    Browse,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Rush => "rush",
            Mix::Orders => "orders",
            Mix::Browse => "browse",
        }
    }

    /// Relative weights (per thousand) of each action.
    pub fn weights(self) -> &'static [(Action, u32)] {
        match self {
            Mix::Rush => &[
                (Action::PlaceOrder, 560),
                (Action::Advance, 300),
                (Action::Cancel, 40),
                (Action::Delete, 10),
                (Action::GetOrder, 60),
                (Action::NewCustomer, 15),
                (Action::NewProduct, 5),
                (Action::PriceChange, 10),
            ],
            Mix::Orders => &[(Action::PlaceOrder, 1)],
            Mix::Browse => &[(Action::Browse, 1)],
        }
    }

    pub fn pick(self, rng: &mut impl Rng) -> Action {
        let weights = self.weights();
        let total: u32 = weights.iter().map(|(_, w)| w).sum();
        let mut x = rng.gen_range(0..total);
        for (action, w) in weights {
            if x < *w {
                return *action;
            }
            x -= w;
        }
        Action::PlaceOrder
    }
}

/// One request of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST /orders`: 1–5 menu items, a known customer or a walk-in.
    PlaceOrder,
    /// `PATCH /orders/{id}` to the next status (placed → preparing → ready → completed).
    Advance,
    /// `PATCH /orders/{id}` to cancelled (from placed or preparing).
    Cancel,
    /// `DELETE /orders/{id}`.
    Delete,
    /// `GET /orders/{id}`.
    GetOrder,
    /// `POST /customers`.
    NewCustomer,
    /// `POST /products`.
    NewProduct,
    /// `PATCH /products/{id}` with a new price.
    PriceChange,
    /// A visit ([`visit`]): `POST /events`, then perhaps `POST /orders` in its session.
    Browse,
}

impl Action {
    /// The endpoint it is reported under.
    pub fn endpoint(self) -> &'static str {
        match self {
            Action::PlaceOrder => "POST /orders",
            Action::Advance | Action::Cancel => "PATCH /orders/{id}",
            Action::Delete => "DELETE /orders/{id}",
            Action::GetOrder => "GET /orders/{id}",
            Action::NewCustomer => "POST /customers",
            Action::NewProduct => "POST /products",
            Action::PriceChange => "PATCH /products/{id}",
            Action::Browse => "POST /events",
        }
    }
}

/// An order's status as the load generator last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Placed,
    Preparing,
    Ready,
}

impl Status {
    /// The next status on the happy path and its API name; `None` after `ready` → completed.
    pub fn advance(self) -> (&'static str, Option<Status>) {
        match self {
            Status::Placed => ("preparing", Some(Status::Preparing)),
            Status::Preparing => ("ready", Some(Status::Ready)),
            Status::Ready => ("completed", None),
        }
    }

    pub fn can_cancel(self) -> bool {
        matches!(self, Status::Placed | Status::Preparing)
    }
}

/// 1–5 distinct products from `menu` (fewer if the menu is smaller), quantities 1–3, mostly 1.
pub fn basket(rng: &mut impl Rng, menu: &[i64]) -> Vec<(i64, i64)> {
    if menu.is_empty() {
        return Vec::new();
    }
    let size = match rng.gen_range(0..100) {
        0..=34 => 1,
        35..=64 => 2,
        65..=84 => 3,
        85..=94 => 4,
        _ => 5,
    }
    .min(menu.len());
    menu.choose_multiple(rng, size)
        .map(|&p| {
            let q = match rng.gen_range(0..10) {
                0..=6 => 1,
                7..=8 => 2,
                _ => 3,
            };
            (p, q)
        })
        .collect()
}

/// `n` distinct products from `menu` (fewer if the menu is smaller), quantity 1 each.
pub fn fixed_basket(rng: &mut impl Rng, menu: &[i64], n: usize) -> Vec<(i64, i64)> {
    menu.choose_multiple(rng, n.min(menu.len()))
        .map(|&p| (p, 1))
        .collect()
}

/// A visit to the menu: the products shown (3 to 8, in order), those clicked (0 to 3 of
/// them), and whether it ends in an order of what was clicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    pub shown: Vec<i64>,
    pub clicked: Vec<i64>,
    pub orders: bool,
}

pub fn visit(rng: &mut impl Rng, menu: &[i64]) -> Visit {
    let n = rng.gen_range(3..=8).min(menu.len());
    let shown: Vec<i64> = menu.choose_multiple(rng, n).copied().collect();
    let clicks = match rng.gen_range(0..10) {
        0..=3 => 0,
        4..=7 => 1,
        8 => 2,
        _ => 3,
    };
    let clicked: Vec<i64> = shown.choose_multiple(rng, clicks).copied().collect();
    let orders = !clicked.is_empty() && rng.gen_bool(0.5);
    Visit {
        shown,
        clicked,
        orders,
    }
}

/// A price between 1.50 and 7.50, two decimals, as the API takes it.
pub fn price(rng: &mut impl Rng) -> String {
    let cents: u32 = rng.gen_range(150..=750);
    format!("{}.{:02}", cents / 100, cents % 100)
}

pub const PAYMENT_METHODS: [&str; 3] = ["card", "cash", "mobile"];
pub const CATEGORIES: [&str; 4] = ["coffee", "tea", "pastry", "cold drinks"];

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn the_rush_mix_follows_its_weights() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen: HashMap<Action, u32> = HashMap::new();
        for _ in 0..100_000 {
            *seen.entry(Mix::Rush.pick(&mut rng)).or_default() += 1;
        }
        for (action, w) in Mix::Rush.weights() {
            let expected = *w as f64 * 100.0;
            let got = seen[action] as f64;
            assert!(
                (got - expected).abs() < expected * 0.15 + 50.0,
                "{action:?}: {got} vs {expected}"
            );
        }
        let mut rng = SmallRng::seed_from_u64(2);
        assert!((0..1000).all(|_| Mix::Orders.pick(&mut rng) == Action::PlaceOrder));
    }

    #[test]
    fn baskets_hold_one_to_five_distinct_menu_items() {
        let mut rng = SmallRng::seed_from_u64(3);
        let menu: Vec<i64> = (100..130).collect();
        let mut sizes = HashSet::new();
        for _ in 0..2000 {
            let b = basket(&mut rng, &menu);
            assert!((1..=5).contains(&b.len()));
            sizes.insert(b.len());
            let distinct: HashSet<i64> = b.iter().map(|(p, _)| *p).collect();
            assert_eq!(distinct.len(), b.len());
            assert!(b
                .iter()
                .all(|(p, q)| menu.contains(p) && (1..=3).contains(q)));
        }
        assert_eq!(sizes.len(), 5, "every size occurs");
        assert_eq!(basket(&mut rng, &[7]).len(), 1);
        assert_eq!(fixed_basket(&mut rng, &menu, 1).len(), 1);
        let mut two = fixed_basket(&mut rng, &[1, 2], 3);
        two.sort_unstable();
        assert_eq!(two, vec![(1, 1), (2, 1)]);
        assert!(basket(&mut rng, &[]).is_empty());
    }

    #[test]
    fn visits_show_click_and_sometimes_order() {
        let mut rng = SmallRng::seed_from_u64(5);
        let menu: Vec<i64> = (1..=30).collect();
        let (mut clicked, mut ordered) = (0, 0);
        for _ in 0..2000 {
            let v = visit(&mut rng, &menu);
            assert!((3..=8).contains(&v.shown.len()));
            assert!(v.clicked.len() <= 3 && v.clicked.iter().all(|c| v.shown.contains(c)));
            assert!(!v.orders || !v.clicked.is_empty());
            clicked += usize::from(!v.clicked.is_empty());
            ordered += usize::from(v.orders);
        }
        assert!((1000..1400).contains(&clicked), "{clicked}");
        assert!((450..750).contains(&ordered), "{ordered}");
        assert!(visit(&mut rng, &[1]).shown == vec![1]);
    }

    #[test]
    fn the_status_machine_ends_at_completed() {
        let mut s = Status::Placed;
        let mut path = vec![];
        loop {
            let (name, next) = s.advance();
            path.push(name);
            match next {
                Some(n) => s = n,
                None => break,
            }
        }
        assert_eq!(path, ["preparing", "ready", "completed"]);
        assert!(Status::Placed.can_cancel() && !Status::Ready.can_cancel());
    }

    #[test]
    fn prices_are_valid_decimals() {
        let mut rng = SmallRng::seed_from_u64(4);
        for _ in 0..500 {
            let p = price(&mut rng);
            let (units, cents) = p.split_once('.').unwrap();
            assert_eq!(cents.len(), 2);
            let v: f64 = p.parse().unwrap();
            assert!((1.5..=7.5).contains(&v), "{p}");
            assert!(!units.is_empty());
        }
    }
}
