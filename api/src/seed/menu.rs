//! The seed's fixed master data: four shops, their staff, a ~30-item menu and the name pools
//! the 200 sample customers are drawn from. Fixed (not random) so a second run finds every
//! row already there and adds nothing.

/// A calendar date as (year, month, day).
pub(super) type Ymd = (i32, u32, u32);

pub(super) struct SeedStore {
    pub name: &'static str,
    pub city: &'static str,
    pub opened: Ymd,
    /// Share of the chain's orders.
    pub share: f64,
}

const fn store(name: &'static str, city: &'static str, opened: Ymd, share: f64) -> SeedStore {
    SeedStore {
        name,
        city,
        opened,
        share,
    }
}

pub(super) const STORES: &[SeedStore] = &[
    store("Brewlytics Downtown", "Portland", (2018, 4, 2), 0.36),
    store("Brewlytics Riverside", "Portland", (2019, 9, 16), 0.26),
    store("Brewlytics Campus", "Eugene", (2021, 1, 11), 0.24),
    store("Brewlytics Airport", "Portland", (2022, 6, 1), 0.14),
];

pub(super) struct SeedEmployee {
    pub name: &'static str,
    pub role: &'static str,
    pub store: &'static str,
    pub active: bool,
    pub hired: Ymd,
}

const fn staff(
    name: &'static str,
    role: &'static str,
    store: &'static str,
    active: bool,
    hired: Ymd,
) -> SeedEmployee {
    SeedEmployee {
        name,
        role,
        store,
        active,
        hired,
    }
}

#[rustfmt::skip]
pub(super) const EMPLOYEES: &[SeedEmployee] = &[
    staff("Ava Thompson", "manager", "Brewlytics Downtown", true, (2018, 3, 19)),
    staff("Liam Carter", "barista", "Brewlytics Downtown", true, (2020, 5, 4)),
    staff("Mia Nguyen", "barista", "Brewlytics Downtown", true, (2022, 8, 22)),
    staff("Noah Patel", "shift_lead", "Brewlytics Riverside", true, (2019, 9, 2)),
    staff("Emma Rossi", "barista", "Brewlytics Riverside", true, (2021, 2, 15)),
    staff("Lucas Kim", "barista", "Brewlytics Riverside", true, (2023, 4, 3)),
    staff("Sofia Garcia", "manager", "Brewlytics Campus", true, (2020, 12, 7)),
    staff("Ethan Brooks", "barista", "Brewlytics Campus", true, (2022, 9, 1)),
    staff("Olivia Chen", "barista", "Brewlytics Campus", true, (2023, 1, 9)),
    staff("Mason Reed", "shift_lead", "Brewlytics Airport", true, (2022, 5, 16)),
    staff("Isabella Silva", "barista", "Brewlytics Airport", true, (2023, 6, 26)),
    staff("Jack Murphy", "barista", "Brewlytics Downtown", false, (2019, 1, 14)),
    staff("Chloe Dubois", "barista", "Brewlytics Airport", false, (2022, 7, 4)),
];

/// (name, category, price in cents, available, description)
pub(super) type SeedProduct = (&'static str, &'static str, i64, bool, &'static str);

#[rustfmt::skip]
pub(super) const PRODUCTS: &[SeedProduct] = &[
    ("Espresso", "coffee", 250, true, "A single shot of the house blend"),
    ("Double espresso", "coffee", 310, true, "Two shots"),
    ("Americano", "coffee", 290, true, "Espresso and hot water"),
    ("Flat white", "coffee", 380, true, "Double shot with velvety milk"),
    ("Cappuccino", "coffee", 360, true, "Espresso, steamed milk, foam"),
    ("Caffe latte", "coffee", 390, true, "Espresso with lots of steamed milk"),
    ("Mocha", "coffee", 420, true, "Latte with dark chocolate"),
    ("Cortado", "coffee", 330, true, "Espresso cut with warm milk"),
    ("Cold brew", "coffee", 400, true, "Steeped for 18 hours"),
    ("Iced latte", "coffee", 430, true, "Espresso and cold milk over ice"),
    ("Pumpkin spice latte", "coffee", 480, false, "Seasonal, back in autumn"),
    ("English breakfast tea", "tea", 240, true, "Strong black tea"),
    ("Earl grey", "tea", 240, true, "Black tea with bergamot"),
    ("Green tea", "tea", 260, true, "Japanese sencha"),
    ("Chai latte", "tea", 390, true, "Spiced black tea with milk"),
    ("Matcha latte", "tea", 440, true, "Ceremonial matcha with milk"),
    ("Peppermint tea", "tea", 240, true, "Caffeine free"),
    ("Butter croissant", "pastries", 280, true, "Baked every morning"),
    ("Pain au chocolat", "pastries", 310, true, "Two bars of dark chocolate"),
    ("Blueberry muffin", "pastries", 320, true, "With a crumble top"),
    ("Cinnamon roll", "pastries", 350, true, "Glazed"),
    ("Banana bread", "pastries", 300, true, "A thick slice"),
    ("Almond croissant", "pastries", 360, true, "Twice baked"),
    ("Ham and cheese toastie", "sandwiches", 650, true, "On sourdough"),
    ("Caprese panini", "sandwiches", 720, true, "Mozzarella, tomato, basil"),
    ("Chicken pesto wrap", "sandwiches", 780, true, "Grilled chicken, pesto, rocket"),
    ("Egg and avocado bagel", "sandwiches", 690, true, "Served warm"),
    ("Tuna melt", "sandwiches", 740, true, "With cheddar"),
    ("Brewlytics mug", "merchandise", 1200, true, "Stoneware, 350 ml"),
    ("Reusable cup", "merchandise", 1500, true, "Keeps it hot for an hour"),
    ("House blend beans 250g", "merchandise", 1150, true, "Whole beans"),
    ("Tote bag", "merchandise", 900, true, "Organic cotton"),
];

/// How often an order line is from each category, (category, weight).
pub(super) const CATEGORY_WEIGHTS: &[(&str, u32)] = &[
    ("coffee", 50),
    ("tea", 14),
    ("pastries", 20),
    ("sandwiches", 10),
    ("merchandise", 2),
];

/// Weight of sandwiches between 11:00 and 14:59 (the lunch bump).
pub(super) const LUNCH_SANDWICH_WEIGHT: u32 = 28;

/// Orders per opening hour 06:00–19:59, weekdays: a 7–10 h peak and a lunch bump.
pub(super) const WEEKDAY_HOURS: [u32; 14] = [3, 10, 14, 12, 7, 5, 8, 7, 4, 4, 4, 3, 2, 1];
/// Weekends: a later, broader morning peak.
pub(super) const WEEKEND_HOURS: [u32; 14] = [1, 4, 8, 11, 11, 8, 8, 7, 5, 5, 4, 3, 2, 1];
/// First opening hour.
pub(super) const OPENING_HOUR: u32 = 6;

pub(super) const FIRST_NAMES: [&str; 20] = [
    "Ada", "Ben", "Carla", "Dmitri", "Elena", "Farah", "Gus", "Hana", "Ivan", "Jonas", "Keiko",
    "Leon", "Maya", "Nils", "Oona", "Priya", "Quinn", "Rosa", "Sami", "Tess",
];

pub(super) const LAST_NAMES: [&str; 20] = [
    "Alvarez", "Becker", "Costa", "Dunn", "Eriksen", "Fischer", "Gupta", "Hughes", "Ito", "Jensen",
    "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Park", "Quist", "Romero", "Sato", "Tanaka",
];

/// The sample customers: 200 distinct (name, email) pairs, the same on every run.
pub(super) fn customers() -> Vec<(String, String)> {
    (0..200usize)
        .map(|i| {
            let first = FIRST_NAMES[i % 20];
            // 3 is invertible mod 20, so (i % 20, i / 20) → distinct (first, last) pairs.
            let last = LAST_NAMES[(3 * (i / 20) + i % 20) % 20];
            let email = format!(
                "{}.{}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            );
            (format!("{first} {last}"), email)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn master_data_is_consistent() {
        let emails: HashSet<String> = customers().into_iter().map(|(_, e)| e).collect();
        assert_eq!(emails.len(), 200);
        let stores: HashSet<&str> = STORES.iter().map(|s| s.name).collect();
        assert!(EMPLOYEES.iter().all(|e| stores.contains(e.store)));
        let names: HashSet<&str> = PRODUCTS.iter().map(|p| p.0).collect();
        assert_eq!(names.len(), PRODUCTS.len());
        assert!(PRODUCTS
            .iter()
            .all(|p| CATEGORY_WEIGHTS.iter().any(|(c, _)| *c == p.1) && p.2 > 0));
        let weight: f64 = STORES.iter().map(|s| s.share).sum();
        assert!((weight - 1.0).abs() < 1e-9);
    }
}
