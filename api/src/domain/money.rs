//! Prices and totals. Money is `rust_decimal::Decimal` with two decimals, serialized as a
//! string ("7.60") so no client ever sees a binary float.
//!
//! A price in a request is a decimal string matching [`PRICE_PATTERN`] or a JSON number with
//! at most two decimals, greater than 0 and at most [`MAX_PRICE`]: the same rule the OpenAPI
//! document states (a pattern for the string, `exclusiveMinimum`/`maximum`/`multipleOf` for
//! the number).

use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
use utoipa::openapi::Schema;

/// A price as text: 0.01 to 10000 with at most two decimals, no sign, exponent or leading
/// zero.
pub const PRICE_PATTERN: &str =
    r"^(?:[1-9][0-9]{0,3}(?:\.[0-9]{1,2})?|10000(?:\.00?)?|0\.(?:0[1-9]|[1-9][0-9]?))$";

static PRICE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(PRICE_PATTERN).expect("PRICE_PATTERN is a valid expression"));

/// The most a single product may cost; anything above is a typo, not a menu item.
pub const MAX_PRICE: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);

/// Why a price was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("price must be greater than 0")]
    NotPositive,
    #[error("price must have at most 2 decimals")]
    TooPrecise,
    #[error("price must be at most {MAX_PRICE}")]
    TooLarge,
    #[error("price must be a decimal like 3.80 (got {0:?})")]
    Syntax(String),
}

/// Reads a price as a client wrote it (string) or as JSON's shortest form of a number shows it,
/// and returns it with two decimals. The text must match [`PRICE_PATTERN`]; when it does not,
/// the error says why.
pub fn parse_price(text: &str) -> Result<Decimal, PriceError> {
    if PRICE.is_match(text) {
        let price = Decimal::from_str(text).map_err(|_| PriceError::Syntax(text.to_owned()))?;
        return Ok(two_decimals(price));
    }
    let syntax = || PriceError::Syntax(text.to_owned());
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    let price = Decimal::from_str(text)
        .ok()
        .filter(|_| plain)
        .ok_or_else(syntax)?;
    if price > Decimal::ZERO && price.scale() > 2 {
        return Err(PriceError::TooPrecise);
    }
    validate_price(price)?;
    // In range and precise enough, yet not in the canonical form (a leading zero, "1.").
    Err(syntax())
}

/// `deserialize_with` for a required price (string or number).
pub fn deserialize_price<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    d.deserialize_any(PriceVisitor)
}

/// `deserialize_with` for a price that may be absent but, when present, is not null.
pub fn deserialize_some_price<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Decimal>, D::Error> {
    d.deserialize_any(PriceVisitor).map(Some)
}

struct PriceVisitor;

impl Visitor<'_> for PriceVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a price: a decimal string like \"3.80\" or a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_price(v).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        // Display gives the shortest text that reads back as `v`, without an exponent: what
        // the client most likely wrote, and how JSON Schema's multipleOf sees the number.
        parse_price(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        parse_price(&v.to_string()).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        parse_price(&v.to_string()).map_err(E::custom)
    }
}

/// The JSON Schema of a request price: a string matching [`PRICE_PATTERN`] or a number.
pub fn price_schema() -> Schema {
    let text = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .pattern(Some(PRICE_PATTERN))
        .examples([serde_json::json!("3.80")]);
    let number = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Number))
        .exclusive_minimum(Some(0.0))
        .maximum(Some(10_000.0))
        .multiple_of(Some(0.01));
    Schema::OneOf(
        OneOfBuilder::new()
            .item(text)
            .item(number)
            .description(Some(
                "0.01 to 10000 with at most two decimals: a string such as \"3.80\" or a number",
            ))
            .build(),
    )
}

/// Checks a menu price (> 0, at most two decimals, at most [`MAX_PRICE`]) and returns it with
/// exactly two decimals ("3.8" becomes "3.80").
pub fn validate_price(price: Decimal) -> Result<Decimal, PriceError> {
    if price <= Decimal::ZERO {
        return Err(PriceError::NotPositive);
    }
    if price.normalize().scale() > 2 {
        return Err(PriceError::TooPrecise);
    }
    if price > MAX_PRICE {
        return Err(PriceError::TooLarge);
    }
    Ok(two_decimals(price))
}

/// The amount of one order line.
pub fn line_amount(unit_price: Decimal, quantity: i32) -> Decimal {
    unit_price * Decimal::from(quantity)
}

/// The total of an order: the sum of its lines, with exactly two decimals.
pub fn order_total(lines: impl IntoIterator<Item = (Decimal, i32)>) -> Decimal {
    let sum: Decimal = lines.into_iter().map(|(p, q)| line_amount(p, q)).sum();
    two_decimals(sum)
}

/// Rounds half away from zero to cents and fixes the scale at 2 for display.
pub fn two_decimals(amount: Decimal) -> Decimal {
    let mut rounded =
        amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn valid_prices_get_two_decimals() {
        assert_eq!(validate_price(d("3.8")).unwrap().to_string(), "3.80");
        assert_eq!(validate_price(d("4")).unwrap().to_string(), "4.00");
        assert_eq!(validate_price(d("3.800")).unwrap().to_string(), "3.80");
        assert_eq!(validate_price(d("10000")).unwrap().to_string(), "10000.00");
        assert_eq!(validate_price(d("0.01")).unwrap().to_string(), "0.01");
    }

    #[test]
    fn bad_prices_are_refused() {
        assert_eq!(validate_price(d("0")), Err(PriceError::NotPositive));
        assert_eq!(validate_price(d("-1.00")), Err(PriceError::NotPositive));
        assert_eq!(validate_price(d("3.805")), Err(PriceError::TooPrecise));
        assert_eq!(validate_price(d("10000.01")), Err(PriceError::TooLarge));
        assert_eq!(
            PriceError::TooLarge.to_string(),
            "price must be at most 10000"
        );
    }

    #[test]
    fn request_prices_follow_the_pattern() {
        for (text, price) in [
            ("3.8", "3.80"),
            ("4", "4.00"),
            ("0.05", "0.05"),
            ("10000.00", "10000.00"),
            ("9999.99", "9999.99"),
        ] {
            assert_eq!(parse_price(text).unwrap().to_string(), price, "{text}");
        }
        assert_eq!(parse_price("0"), Err(PriceError::NotPositive));
        assert_eq!(parse_price("-1.00"), Err(PriceError::NotPositive));
        assert_eq!(parse_price("3.805"), Err(PriceError::TooPrecise));
        assert_eq!(parse_price("3.800"), Err(PriceError::TooPrecise));
        assert_eq!(parse_price("10000.01"), Err(PriceError::TooLarge));
        for odd in ["03.80", "3.", ".5", "+3", "1e2", "3,80", " 3.80", "1_0", ""] {
            assert!(parse_price(odd).is_err(), "{odd:?}");
        }
        let from_json = |v: serde_json::Value| deserialize_price(v).map_err(|e| e.to_string());
        assert_eq!(
            from_json(serde_json::json!(3.8)).unwrap().to_string(),
            "3.80"
        );
        assert_eq!(
            from_json(serde_json::json!(12)).unwrap().to_string(),
            "12.00"
        );
        assert!(from_json(serde_json::json!(0.1 + 0.2)).is_err());
        assert!(from_json(serde_json::json!(1e-7)).is_err());
        assert!(from_json(serde_json::json!(null)).is_err());
        assert!(from_json(serde_json::json!(true)).is_err());
    }

    #[test]
    fn totals_sum_lines_with_two_decimals() {
        assert_eq!(order_total([(d("3.80"), 2)]).to_string(), "7.60");
        assert_eq!(
            order_total([(d("3.80"), 2), (d("2.50"), 3), (d("0.05"), 1)]).to_string(),
            "15.15"
        );
        assert_eq!(order_total([]).to_string(), "0.00");
    }
}
