//! Log sequence numbers: positions in the PostgreSQL write-ahead log.
//!
//! An [`Lsn`] is a plain 64-bit byte position. PostgreSQL prints it as two upper-case
//! hexadecimal numbers, the high and low 32 bits, separated by a slash (`16/B374D848`);
//! [`Display`](fmt::Display), [`FromStr`] and serde all use that form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in the write-ahead log, ordered like the log itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/0`, which PostgreSQL uses for "no position" (`InvalidXLogRecPtr`).
    pub const ZERO: Lsn = Lsn(0);

    /// Whether this is `0/0`.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Bytes of WAL from `earlier` to `self`, or 0 when `earlier` is not earlier.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text given to [`Lsn::from_str`] is not of the form `XXXXXXXX/XXXXXXXX`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {input:?}: {reason}; expected two hexadecimal numbers of 1 to 8 digits separated by '/', like 16/B374D848")]
pub struct LsnParseError {
    input: String,
    reason: &'static str,
}

impl LsnParseError {
    fn new(input: &str, reason: &'static str) -> Self {
        const SHOWN: usize = 40;
        let input = match input.char_indices().nth(SHOWN) {
            Some((cut, _)) => format!("{}…", &input[..cut]),
            None => input.to_owned(),
        };
        LsnParseError { input, reason }
    }
}

/// Parses one half of an LSN exactly as PostgreSQL's `pg_lsn_in` does: 1 to 8 hex digits.
fn parse_half(text: &str, input: &str, which: &'static str) -> Result<u64, LsnParseError> {
    if text.is_empty() {
        return Err(LsnParseError::new(input, which));
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LsnParseError::new(input, "not a hexadecimal digit"));
    }
    if text.len() > 8 {
        return Err(LsnParseError::new(input, "a half has more than 32 bits"));
    }
    u64::from_str_radix(text, 16).map_err(|_| LsnParseError::new(input, "not a hexadecimal number"))
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (high, low) = input
            .split_once('/')
            .ok_or_else(|| LsnParseError::new(input, "missing '/'"))?;
        if low.contains('/') {
            return Err(LsnParseError::new(input, "more than one '/'"));
        }
        let high = parse_half(high, input, "missing the part before '/'")?;
        let low = parse_half(low, input, "missing the part after '/'")?;
        Ok(Lsn((high << 32) | low))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn::ZERO.to_string(), "0/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!(Lsn(0x1_0000_0000).to_string(), "1/0");
    }

    #[test]
    fn parses_postgres_form_in_either_case() {
        assert_eq!("16/B374D848".parse::<Lsn>(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("16/b374d848".parse::<Lsn>(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("0/0".parse::<Lsn>(), Ok(Lsn::ZERO));
        assert_eq!("00000000/00000001".parse::<Lsn>(), Ok(Lsn(1)));
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>(), Ok(Lsn(u64::MAX)));
    }

    #[test]
    fn rejects_malformed_text_with_a_clear_message() {
        for (input, reason) in [
            ("abc", "missing '/'"),
            ("", "missing '/'"),
            ("1/", "missing the part after '/'"),
            ("/1", "missing the part before '/'"),
            ("1/2/3", "more than one '/'"),
            ("123456789/0", "more than 32 bits"),
            ("0/FFFFFFFFF", "more than 32 bits"),
            ("+1/2", "not a hexadecimal digit"),
            ("1/-2", "not a hexadecimal digit"),
            (" 1/2", "not a hexadecimal digit"),
            ("1/2 ", "not a hexadecimal digit"),
            ("g/0", "not a hexadecimal digit"),
            ("1/é", "not a hexadecimal digit"),
        ] {
            let err = input.parse::<Lsn>().unwrap_err();
            let message = err.to_string();
            assert!(message.contains(reason), "{input:?}: {message}");
            assert!(message.contains(&format!("{input:?}")), "{message}");
        }
    }

    #[test]
    fn error_message_truncates_huge_input() {
        let input = "9".repeat(10_000);
        let message = input.parse::<Lsn>().unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn orders_like_the_log() {
        assert!(Lsn(0x1_0000_0000) > Lsn(0xFFFF_FFFF));
        assert_eq!(Lsn(10).bytes_since(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_since(Lsn(10)), 0);
        assert!(Lsn::ZERO.is_zero() && Lsn::default().is_zero());
        assert_eq!(u64::from(Lsn::from(7)), 7);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let json = serde_json::to_string(&Lsn(0x16_B374_D848)).unwrap();
        assert_eq!(json, "\"16/B374D848\"");
        let back: Lsn = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Lsn(0x16_B374_D848));
        // An escaped string works too.
        let escaped: Lsn = serde_json::from_str("\"1\\/A\"").unwrap();
        assert_eq!(escaped, Lsn(0x1_0000_000A));
        let err = serde_json::from_str::<Lsn>("\"1/2/3\"").unwrap_err();
        assert!(err.to_string().contains("more than one '/'"), "{err}");
        assert!(serde_json::from_str::<Lsn>("42").is_err());
    }

    #[test]
    fn display_and_parse_round_trip() {
        for value in [
            0,
            1,
            0xFFFF_FFFF,
            0x1_0000_0000,
            0xDEAD_BEEF_0000_0001,
            u64::MAX,
        ] {
            assert_eq!(Lsn(value).to_string().parse::<Lsn>(), Ok(Lsn(value)));
        }
    }
}
