//! Pure rules of the coffee shop: what a valid order, product, customer or restock is, which
//! status transitions are allowed and how totals are computed. Nothing here touches the
//! database; `data/` runs the SQL and asks these functions to decide.

pub mod catalog;
pub mod event;
pub mod fields;
pub mod money;
pub mod order;
pub mod rate;
