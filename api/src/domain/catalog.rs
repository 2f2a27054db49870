//! Master data and stock: customers, products, employees, stores and restocks — request
//! shapes, validation and the rows the API returns.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::money::{self, PriceError};

/// Longest name the schema accepts.
pub const MAX_NAME: usize = 200;
/// Longest category or role.
pub const MAX_LABEL: usize = 100;
/// Largest single restock.
pub const MAX_RESTOCK: i64 = 10_000;

/// Why master data or a restock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} must not be blank")]
    Blank(&'static str),
    #[error("{field} must be at most {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("email {0:?} is not a valid address")]
    InvalidEmail(String),
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

/// Trims a required text field and checks its length.
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, CatalogError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CatalogError::Blank(field));
    }
    if value.chars().count() > max {
        return Err(CatalogError::TooLong { field, max });
    }
    Ok(value.to_owned())
}

/// A deliberately plain check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn validate_email(email: &str) -> Result<String, CatalogError> {
    let email = email.trim();
    let bad = || CatalogError::InvalidEmail(email.to_owned());
    if email.len() < 3 || email.len() > 320 || email.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty());
    if local.is_empty() || !domain_ok {
        return Err(bad());
    }
    Ok(email.to_owned())
}

/// `POST /customers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    pub name: String,
    pub email: String,
}

impl NewCustomer {
    pub fn validate(self) -> Result<Self, CatalogError> {
        Ok(Self {
            name: required_text("name", &self.name, MAX_NAME)?,
            email: validate_email(&self.email)?,
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
    pub name: String,
    /// coffee, tea, pastries, sandwiches, merchandise, … (stored lowercase).
    pub category: String,
    #[schema(value_type = String, example = "3.80")]
    pub price: Decimal,
    #[serde(default = "yes")]
    pub is_available: bool,
    #[serde(default)]
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
            description: self.description.trim().to_owned(),
        })
    }
}

/// `PATCH /products/{id}`: any of the fields; absent or null leaves it unchanged.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub category: Option<String>,
    #[schema(value_type = Option<String>, example = "4.10")]
    pub price: Option<Decimal>,
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
    pub name: String,
    /// barista (default), shift_lead, manager, …
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
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
    pub store_id: i64,
    pub product_id: i64,
    /// 1 to 10000 units.
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
    fn text_fields_are_trimmed_and_bounded() {
        assert_eq!(required_text("name", "  Ada ", 200).unwrap(), "Ada");
        assert_eq!(
            required_text("name", "   ", 200).unwrap_err().to_string(),
            "name must not be blank"
        );
        assert_eq!(
            required_text("name", &"x".repeat(201), 200).unwrap_err(),
            CatalogError::TooLong {
                field: "name",
                max: 200
            }
        );
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        for good in ["ada@example.com", " a.b+c@mail.example.org "] {
            assert!(validate_email(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "a@b",
            "a b@c.de",
            "a@@b.c",
            "a@b..c",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }

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
