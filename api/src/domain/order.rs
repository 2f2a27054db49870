//! Orders: the request shape, its validation, pricing against the product rows read inside the
//! order's transaction, and the status machine.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{fields, money};

/// The most lines one order may have.
pub const MAX_ITEMS: usize = 50;
/// The largest quantity of one line.
pub const MAX_QUANTITY: i64 = 100;

/// Why an order or a status change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("an order needs at least one item")]
    NoItems,
    #[error("an order has at most {MAX_ITEMS} items (got {0})")]
    TooManyItems(usize),
    #[error("items[{index}].quantity must be between 1 and {MAX_QUANTITY} (got {quantity})")]
    Quantity { index: usize, quantity: i64 },
    #[error("unknown product {0}")]
    UnknownProduct(i64),
    #[error("product {0} is not available")]
    UnavailableProduct(i64),
    #[error("unknown customer {0}")]
    UnknownCustomer(i64),
    #[error("unknown employee {0}")]
    UnknownEmployee(i64),
    #[error("employee {0} is not active")]
    InactiveEmployee(i64),
    #[error("unknown store {0}")]
    UnknownStore(i64),
    #[error("order {0} not found")]
    NotFound(Uuid),
    #[error(
        "unknown status {0:?}; expected one of placed, preparing, ready, completed, cancelled"
    )]
    UnknownStatus(String),
    #[error("cannot change order status from {from} to {to}")]
    Transition { from: OrderStatus, to: OrderStatus },
    #[error("order {0} appears twice in one batch of status changes")]
    DuplicateChange(Uuid),
    #[error("session_id must match {}", super::event::SESSION_PATTERN)]
    Session,
}

/// Where an order is in its life. Stored as the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Placed,
    Preparing,
    Ready,
    Completed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Placed,
        OrderStatus::Preparing,
        OrderStatus::Ready,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Preparing => "preparing",
            OrderStatus::Ready => "ready",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Result<Self, OrderError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| OrderError::UnknownStatus(text.to_owned()))
    }

    /// placed → preparing → ready → completed; cancelled from placed or preparing.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Placed, Preparing)
                | (Preparing, Ready)
                | (Ready, Completed)
                | (Placed, Cancelled)
                | (Preparing, Cancelled)
        )
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an order was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum PaymentMethod {
    Card,
    Cash,
    Mobile,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Card => "card",
            PaymentMethod::Cash => "cash",
            PaymentMethod::Mobile => "mobile",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Card, Self::Cash, Self::Mobile]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// Read from a JSON string only (a number or object is a type error, not malformed JSON).
impl TryFrom<String> for PaymentMethod {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text).ok_or_else(|| {
            format!("unknown payment method {text:?}; expected one of card, cash, mobile")
        })
    }
}

/// `POST /orders`. Prices are never taken from the client.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// Null or absent for a walk-in.
    #[serde(default, deserialize_with = "fields::nullable_integer")]
    pub customer_id: Option<i64>,
    #[serde(deserialize_with = "fields::integer")]
    pub employee_id: i64,
    #[serde(deserialize_with = "fields::integer")]
    pub store_id: i64,
    pub payment_method: PaymentMethod,
    /// 1 to 50 lines.
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<NewOrderItem>,
    /// The browsing session the order was placed in (`POST /events`' `session_id`), so its
    /// lines can be attributed to the clicks that led to them. Null or absent: none.
    #[serde(default)]
    #[schema(schema_with = nullable_session_schema)]
    pub session_id: Option<String>,
}

fn nullable_session_schema() -> utoipa::openapi::schema::Schema {
    fields::string_schema(super::event::SESSION_PATTERN, 1, 64, true)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderItem {
    #[serde(deserialize_with = "fields::integer")]
    pub product_id: i64,
    /// 1 to 100.
    #[serde(deserialize_with = "fields::integer")]
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i64,
}

/// `PATCH /orders/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    pub status: NextStatus,
}

/// A status an order can be moved to (every status but `placed`, where orders start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NextStatus {
    Preparing,
    Ready,
    Completed,
    Cancelled,
}

impl TryFrom<String> for NextStatus {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "preparing" => Ok(Self::Preparing),
            "ready" => Ok(Self::Ready),
            "completed" => Ok(Self::Completed),
            "cancelled" => Ok(Self::Cancelled),
            _ => Err(format!(
                "unknown status {text:?}; an order can be moved to preparing, ready, completed \
                 or cancelled"
            )),
        }
    }
}

impl From<NextStatus> for OrderStatus {
    fn from(next: NextStatus) -> Self {
        match next {
            NextStatus::Preparing => OrderStatus::Preparing,
            NextStatus::Ready => OrderStatus::Ready,
            NextStatus::Completed => OrderStatus::Completed,
            NextStatus::Cancelled => OrderStatus::Cancelled,
        }
    }
}

/// An order whose shape has been checked, with its id and time fixed, waiting for the
/// transaction that checks its references and prices it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderDraft {
    pub id: Uuid,
    pub customer_id: Option<i64>,
    pub employee_id: i64,
    pub store_id: i64,
    pub payment_method: PaymentMethod,
    pub ordered_at: DateTime<Utc>,
    pub lines: Vec<DraftLine>,
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftLine {
    pub product_id: i64,
    pub quantity: i32,
}

impl OrderDraft {
    /// Checks the item list and quantities; the id is a fresh UUIDv7 and `ordered_at` is kept
    /// at PostgreSQL's microsecond precision so the response equals what a later read returns.
    pub fn new(req: NewOrder, ordered_at: DateTime<Utc>) -> Result<Self, OrderError> {
        if req.items.is_empty() {
            return Err(OrderError::NoItems);
        }
        if req.items.len() > MAX_ITEMS {
            return Err(OrderError::TooManyItems(req.items.len()));
        }
        let lines = req
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| match item.quantity {
                q @ 1..=MAX_QUANTITY => Ok(DraftLine {
                    product_id: item.product_id,
                    quantity: q as i32,
                }),
                quantity => Err(OrderError::Quantity { index, quantity }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if req
            .session_id
            .as_deref()
            .is_some_and(|s| !super::event::is_session_id(s))
        {
            return Err(OrderError::Session);
        }
        Ok(Self {
            id: Uuid::now_v7(),
            customer_id: req.customer_id,
            employee_id: req.employee_id,
            store_id: req.store_id,
            payment_method: req.payment_method,
            ordered_at: ordered_at.trunc_subsecs(6),
            lines,
            session_id: req.session_id,
        })
    }
}

/// A product row as read (and share-locked) inside the order transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductRow {
    pub price: Decimal,
    pub is_available: bool,
}

/// The referenced rows that exist, read inside the order transaction.
#[derive(Debug, Default, Clone)]
pub struct References {
    pub customers: HashSet<i64>,
    /// Employee id → active.
    pub employees: HashMap<i64, bool>,
    pub stores: HashSet<i64>,
    pub products: HashMap<i64, ProductRow>,
}

/// One priced order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price: Decimal,
}

/// Checks customer, employee, store and products against what the transaction found, and
/// prices every line from the product rows. Returns the lines and the order total.
pub fn price_order(
    draft: &OrderDraft,
    refs: &References,
) -> Result<(Vec<PricedLine>, Decimal), OrderError> {
    if let Some(c) = draft.customer_id {
        if !refs.customers.contains(&c) {
            return Err(OrderError::UnknownCustomer(c));
        }
    }
    match refs.employees.get(&draft.employee_id) {
        None => return Err(OrderError::UnknownEmployee(draft.employee_id)),
        Some(false) => return Err(OrderError::InactiveEmployee(draft.employee_id)),
        Some(true) => {}
    }
    if !refs.stores.contains(&draft.store_id) {
        return Err(OrderError::UnknownStore(draft.store_id));
    }
    let lines = draft
        .lines
        .iter()
        .map(|line| match refs.products.get(&line.product_id) {
            None => Err(OrderError::UnknownProduct(line.product_id)),
            Some(p) if !p.is_available => Err(OrderError::UnavailableProduct(line.product_id)),
            Some(p) => Ok(PricedLine {
                product_id: line.product_id,
                quantity: line.quantity,
                unit_price: p.price,
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total = money::order_total(lines.iter().map(|l| (l.unit_price, l.quantity)));
    Ok((lines, total))
}

/// A requested status change; `at` becomes the order's `updated_at` and, for a
/// cancellation, the time of the compensating inventory movements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

/// Refuses a transition the status machine does not allow.
pub fn check_transition(from: OrderStatus, to: OrderStatus) -> Result<(), OrderError> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(OrderError::Transition { from, to })
    }
}

/// A placed or read order, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub status: OrderStatus,
    /// Sum of unit_price × quantity, two decimals, as a string.
    #[schema(value_type = String, example = "7.60")]
    pub total: Decimal,
    pub customer_id: Option<i64>,
    pub employee_id: i64,
    pub store_id: i64,
    pub payment_method: PaymentMethod,
    pub ordered_at: DateTime<Utc>,
    pub items: Vec<OrderItem>,
    /// The browsing session it was placed in, if one was given.
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OrderItem {
    pub id: i64,
    pub product_id: i64,
    pub quantity: i32,
    #[schema(value_type = String, example = "3.80")]
    pub unit_price: Decimal,
}

#[cfg(test)]
#[path = "order_tests.rs"]
mod tests;
