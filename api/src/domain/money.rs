//! Prices and totals. Money is `rust_decimal::Decimal` with two decimals, serialized as a
//! string ("7.60") so no client ever sees a binary float.

use rust_decimal::Decimal;

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
    fn totals_sum_lines_with_two_decimals() {
        assert_eq!(order_total([(d("3.80"), 2)]).to_string(), "7.60");
        assert_eq!(
            order_total([(d("3.80"), 2), (d("2.50"), 3), (d("0.05"), 1)]).to_string(),
            "15.15"
        );
        assert_eq!(order_total([]).to_string(), "0.00");
    }
}
