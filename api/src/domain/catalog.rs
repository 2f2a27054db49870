//! Master data and stock: customers, products, employees, stores and restocks — request
//! shapes, validation and the rows the API returns.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::fields::{self, schemas, FieldError};
pub use super::fields::{MAX_LABEL, MAX_NAME};
use super::money::{self, PriceError};

/// Largest single restock.
pub const MAX_RESTOCK: i64 = 10_000;

/// Why master data or a restock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("a customer with email {0:?} already exists")]
    DuplicateEmail(String),
    #[error("a product named {0:?} already exists")]
    DuplicateProductName(String),
    #[error(transparent)]
    Price(#[from] PriceError),
    #[error("nothing to update: give at least one of name, category, price, is_available")]
    NothingToUpdate,
    #[error("product {0} not found")]
    ProductNotFound(i64),
    #[error("unknown product {0}")]
    UnknownProduct(i64),
    #[error("unknown store {0}")]
    UnknownStore(i64),
    #[error("quantity must be between 1 and {MAX_RESTOCK} (got {0})")]
    RestockQuantity(i64),
}

/// Trims a required text field and checks it (see [`fields::required_text`]).
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, CatalogError> {
    Ok(fields::required_text(field, value, max)?)
}

/// `deserialize_with` for a field that may be absent but, when present, is not null.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `POST /customers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    #[schema(schema_with = schemas::name)]
    pub name: String,
    #[schema(schema_with = schemas::email)]
    pub email: String,
}

impl NewCustomer {
    pub fn validate(self) -> Result<Self, CatalogError> {
        Ok(Self {
            name: required_text("name", &self.name, MAX_NAME)?,
            email: fields::email(&self.email)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /products`. The price is a decimal string or a JSON number.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    #[schema(schema_with = schemas::name)]
    pub name: String,
    /// coffee, tea, pastries, sandwiches, merchandise, … (stored lowercase).
    #[schema(schema_with = schemas::label)]
    pub category: String,
    #[serde(deserialize_with = "money::deserialize_price")]
    #[schema(schema_with = money::price_schema)]
    pub price: Decimal,
    #[serde(default = "yes")]
    pub is_available: bool,
    #[serde(default)]
    #[schema(schema_with = schemas::description)]
    pub description: String,
}

fn yes() -> bool {
    true
}

impl NewProduct {
    pub fn validate(self) -> Result<Self, CatalogError> {
        Ok(Self {
            name: required_text("name", &self.name, MAX_NAME)?,
            category: required_text("category", &self.category, MAX_LABEL)?.to_lowercase(),
            price: money::validate_price(self.price)?,
            is_available: self.is_available,
            description: fields::description(&self.description)?,
        })
    }
}

/// `PATCH /products/{id}`: at least one of the fields; an absent field keeps its value (null
/// is refused: it would not say what the value should become).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::name)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::label)]
    pub category: Option<String>,
    #[serde(default, deserialize_with = "money::deserialize_some_price")]
    #[schema(schema_with = money::price_schema)]
    pub price: Option<Decimal>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub is_available: Option<bool>,
}

impl ProductPatch {
    pub fn validate(self) -> Result<Self, CatalogError> {
        if self.name.is_none()
            && self.category.is_none()
            && self.price.is_none()
            && self.is_available.is_none()
        {
            return Err(CatalogError::NothingToUpdate);
        }
        Ok(Self {
            name: self
                .name
                .map(|n| required_text("name", &n, MAX_NAME))
                .transpose()?,
            category: self
                .category
                .map(|c| required_text("category", &c, MAX_LABEL).map(|c| c.to_lowercase()))
                .transpose()?,
            price: self.price.map(money::validate_price).transpose()?,
            is_available: self.is_available,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub category: String,
    #[schema(value_type = String, example = "3.80")]
    pub price: Decimal,
    pub is_available: bool,
    pub description: String,
    pub updated_at: DateTime<Utc>,
}

/// `POST /employees`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEmployee {
    #[schema(schema_with = schemas::name)]
    pub name: String,
    /// barista (default or null), shift_lead, manager, …
    #[serde(default)]
    #[schema(schema_with = schemas::nullable_label)]
    pub role: Option<String>,
    #[serde(default, deserialize_with = "fields::nullable_integer")]
    pub store_id: Option<i64>,
    #[serde(default = "yes")]
    pub active: bool,
}

impl NewEmployee {
    pub fn validate(self) -> Result<Self, CatalogError> {
        Ok(Self {
            name: required_text("name", &self.name, MAX_NAME)?,
            role: Some(match self.role {
                Some(r) => required_text("role", &r, MAX_LABEL)?,
                None => "barista".to_owned(),
            }),
            store_id: self.store_id,
            active: self.active,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Employee {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub store_id: Option<i64>,
    pub active: bool,
    pub hired_on: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Store {
    pub id: i64,
    pub name: String,
    pub city: String,
    pub opened_on: NaiveDate,
}

/// `POST /inventory/restock`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    #[serde(deserialize_with = "fields::integer")]
    pub store_id: i64,
    #[serde(deserialize_with = "fields::integer")]
    pub product_id: i64,
    /// 1 to 10000 units.
    #[serde(deserialize_with = "fields::integer")]
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
}

impl Restock {
    /// The checked quantity as the movement's delta.
    pub fn delta(&self) -> Result<i32, CatalogError> {
        match self.quantity {
            q @ 1..=MAX_RESTOCK => Ok(q as i32),
            q => Err(CatalogError::RestockQuantity(q)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct InventoryMovement {
    pub id: i64,
    pub store_id: i64,
    pub product_id: i64,
    pub delta: i32,
    pub reason: String,
    pub occurred_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn product_validation_normalizes_category_and_price() {
        let p = NewProduct {
            name: " Flat white ".into(),
            category: "Coffee".into(),
            price: Decimal::from_str("3.8").unwrap(),
            is_available: true,
            description: String::new(),
        }
        .validate()
        .unwrap();
        assert_eq!(
            (p.name.as_str(), p.category.as_str()),
            ("Flat white", "coffee")
        );
        assert_eq!(p.price.to_string(), "3.80");
        assert_eq!(
            ProductPatch::default().validate().unwrap_err(),
            CatalogError::NothingToUpdate
        );
    }

    #[test]
    fn restock_quantity_is_bounded() {
        let r = |quantity| Restock {
            store_id: 1,
            product_id: 1,
            quantity,
        };
        assert_eq!(r(40).delta().unwrap(), 40);
        assert_eq!(r(0).delta().unwrap_err(), CatalogError::RestockQuantity(0));
        assert!(r(10_001).delta().is_err());
    }
}
