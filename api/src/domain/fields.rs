//! The rules of the free-text fields of requests — names, labels, emails, descriptions — and
//! their JSON Schemas. Each rule is written once, as a regular expression that both validates
//! requests here and becomes the field's `pattern` in the OpenAPI document, so a contract
//! tester and the server agree on every string.
//!
//! The expressions use only explicit character classes (no `\s`, `\w`, `\d`): Rust's `regex`,
//! ECMA-262 and Python's `re` read them the same way.

use std::sync::LazyLock;

use regex::Regex;
use serde::de::{self, Deserializer, Visitor};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Object, Schema};

/// Control characters (Unicode `Cc`, what `char::is_control` refuses).
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
/// White space that is not a control character (the rest of `char::is_whitespace`).
const SPACE: &str = r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// A name or label: no control characters and at least one character that is not white
/// space. Surrounding white space is trimmed before the value is stored.
pub static NAME_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let ok = format!("[^{CONTROL}]");
    let solid = format!("[^{CONTROL}{SPACE}]");
    format!("^{ok}*{solid}{ok}*$")
});

/// An email address: `local@domain.tld` without white space, control characters or a second
/// `@`, every domain label non-empty; white space around it is trimmed.
pub static EMAIL_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let space = format!("[{SPACE}]");
    let local = format!("[^{CONTROL}{SPACE}@]");
    let label = format!("[^{CONTROL}{SPACE}@.]");
    format!("^{space}*{local}+@{label}+(?:\\.{label}+)+{space}*$")
});

/// A description: anything PostgreSQL can store in `text` (no NUL), new lines included.
pub const DESCRIPTION_PATTERN: &str = r"^[^\u0000]*$";

/// Longest name (customers, products, employees).
pub const MAX_NAME: usize = 200;
/// Longest category or role.
pub const MAX_LABEL: usize = 100;
/// Longest email, as PostgreSQL's check on `customers.email` allows.
pub const MAX_EMAIL: usize = 320;
/// Longest product description.
pub const MAX_DESCRIPTION: usize = 2000;

static NAME: LazyLock<Regex> = LazyLock::new(|| compile(&NAME_PATTERN));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| compile(&EMAIL_PATTERN));

fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the field patterns are valid regular expressions")
}

/// Why a text field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("{0} must not be blank")]
    Blank(&'static str),
    #[error("{0} must not contain control characters")]
    Control(&'static str),
    #[error("{field} must be at most {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("email {0:?} is not a valid address")]
    InvalidEmail(String),
}

/// A name or label: checked against [`NAME_PATTERN`] and `max` characters (counted before
/// trimming, as JSON Schema's `maxLength` counts), returned trimmed.
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, FieldError> {
    check_length(field, value, max)?;
    if !NAME.is_match(value) {
        return Err(if value.chars().any(char::is_control) {
            FieldError::Control(field)
        } else {
            FieldError::Blank(field)
        });
    }
    Ok(value.trim().to_owned())
}

/// An email address: [`EMAIL_PATTERN`], at most [`MAX_EMAIL`] characters; returned trimmed.
pub fn email(value: &str) -> Result<String, FieldError> {
    check_length("email", value, MAX_EMAIL)?;
    if !EMAIL.is_match(value) {
        return Err(FieldError::InvalidEmail(value.trim().to_owned()));
    }
    Ok(value.trim().to_owned())
}

/// A description: no NUL, at most [`MAX_DESCRIPTION`] characters; returned trimmed.
pub fn description(value: &str) -> Result<String, FieldError> {
    check_length("description", value, MAX_DESCRIPTION)?;
    if value.contains('\0') {
        return Err(FieldError::Control("description"));
    }
    Ok(value.trim().to_owned())
}

fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.chars().count() > max {
        Err(FieldError::TooLong { field, max })
    } else {
        Ok(())
    }
}

/// `deserialize_with` for an integer field: JSON Schema counts `3.0` as the integer 3, and so
/// does the API (serde alone would refuse it).
pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(IntegerVisitor)
}

/// [`integer`] for a field that may be null or absent (with `#[serde(default)]`).
pub fn nullable_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(NullableInteger)
}

struct IntegerVisitor;

impl Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // 2^63 is the first float past i64::MAX; every float below it with no fraction fits.
        if v.fract() == 0.0 && v >= i64::MIN as f64 && v < 9_223_372_036_854_775_808.0 {
            Ok(v as i64)
        } else {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        }
    }
}

struct NullableInteger;

impl<'de> Visitor<'de> for NullableInteger {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        integer(d).map(Some)
    }
}

/// The JSON Schema of a string matching `pattern`, between `min` and `max` characters.
pub fn string_schema(pattern: &str, min: usize, max: usize, nullable: bool) -> Schema {
    let ty = if nullable {
        utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])
    } else {
        utoipa::openapi::schema::SchemaType::new(Type::String)
    };
    let object: Object = ObjectBuilder::new()
        .schema_type(ty)
        .pattern(Some(pattern.to_owned()))
        .min_length(Some(min))
        .max_length(Some(max))
        .build();
    Schema::Object(object)
}

/// `schema_with` targets for the request types.
pub mod schemas {
    use super::*;

    pub fn name() -> Schema {
        string_schema(&NAME_PATTERN, 1, MAX_NAME, false)
    }
    pub fn label() -> Schema {
        string_schema(&NAME_PATTERN, 1, MAX_LABEL, false)
    }
    pub fn nullable_label() -> Schema {
        string_schema(&NAME_PATTERN, 1, MAX_LABEL, true)
    }
    pub fn email() -> Schema {
        string_schema(&EMAIL_PATTERN, 5, MAX_EMAIL, false)
    }
    pub fn description() -> Schema {
        string_schema(DESCRIPTION_PATTERN, 0, MAX_DESCRIPTION, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_large_integral_float_is_read_exactly() {
        // Beyond 2^51 a float's step is 0.5 or more: a parser that rounds the last digit
        // wrong turns an integer into a fraction (seen: ...246.0 read as ...246.5).
        #[derive(serde::Deserialize)]
        struct Id {
            #[serde(deserialize_with = "integer")]
            id: i64,
        }
        for (text, id) in [
            ("3821659708021246.0", 3_821_659_708_021_246),
            ("4503599627370495.0", 4_503_599_627_370_495),
            ("9007199254740992.0", 9_007_199_254_740_992),
        ] {
            let v: Id = serde_json::from_str(&format!(r#"{{"id": {text}}}"#)).unwrap();
            assert_eq!(v.id, id, "{text}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(required_text("name", "  Ada ", 200).unwrap(), "Ada");
        assert_eq!(
            required_text("name", "Caffè\u{a0}latte", 200).unwrap(),
            "Caffè\u{a0}latte"
        );
        assert_eq!(
            required_text("name", " \u{3000} ", 200).unwrap_err(),
            FieldError::Blank("name")
        );
        assert_eq!(
            required_text("name", "Ada\u{0}", 200)
                .unwrap_err()
                .to_string(),
            "name must not contain control characters"
        );
        assert_eq!(
            required_text("name", "a\tb", 200).unwrap_err(),
            FieldError::Control("name")
        );
        assert_eq!(
            required_text("name", &"x".repeat(201), 200).unwrap_err(),
            FieldError::TooLong {
                field: "name",
                max: 200
            }
        );
        // Length counts the characters sent, as `maxLength` does.
        assert!(required_text("name", &format!(" {}", "x".repeat(200)), 200).is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        for good in ["ada@example.com", " a.b+c@mail.example.org ", "ü@bü.de"] {
            assert!(email(good).is_ok(), "{good}");
        }
        assert_eq!(email(" ada@example.com ").unwrap(), "ada@example.com");
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "a@b",
            "a b@c.de",
            "a@@b.c",
            "a@b..c",
            "a@b.c.",
            "a@.b.c",
            "a\u{0}@b.c",
            "a@b.c\n",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_may_be_written_as_whole_floats() {
        let int = |v: serde_json::Value| integer(v).map_err(|e| e.to_string());
        assert_eq!(int(serde_json::json!(7)), Ok(7));
        assert_eq!(int(serde_json::json!(-3.0)), Ok(-3));
        assert_eq!(int(serde_json::json!(-9.223372036854776e18)), Ok(i64::MIN));
        assert!(int(serde_json::json!(2.5)).is_err());
        assert!(int(serde_json::json!(9.3e18)).is_err());
        assert!(int(serde_json::json!(u64::MAX)).is_err());
        assert!(int(serde_json::json!("7")).is_err());
        assert!(int(serde_json::json!(null)).is_err());
        let nullable = |v: serde_json::Value| nullable_integer(v).map_err(|e| e.to_string());
        assert_eq!(nullable(serde_json::json!(null)), Ok(None));
        assert_eq!(nullable(serde_json::json!(4.0)), Ok(Some(4)));
        assert!(nullable(serde_json::json!(4.5)).is_err());
    }

    #[test]
    fn descriptions_refuse_only_nul() {
        assert_eq!(description(" two\nlines ").unwrap(), "two\nlines");
        assert_eq!(
            description("a\u{0}").unwrap_err(),
            FieldError::Control("description")
        );
    }

    /// Characters near every boundary of the patterns' classes.
    fn tricky_char() -> impl Strategy<Value = char> {
        prop_oneof![
            Just(' '),
            Just('\t'),
            Just('\n'),
            Just('\u{0}'),
            Just('\u{7f}'),
            Just('\u{85}'),
            Just('\u{a0}'),
            Just('\u{1680}'),
            Just('\u{2009}'),
            Just('\u{200b}'),
            Just('\u{2028}'),
            Just('\u{3000}'),
            Just('\u{feff}'),
            Just('@'),
            Just('.'),
            Just('a'),
            Just('é'),
            any::<char>(),
        ]
    }

    proptest! {
        /// The pattern is the rule: a non-blank, control-free string matches it, nothing else.
        #[test]
        fn name_pattern_is_the_blank_and_control_rule(chars in proptest::collection::vec(tricky_char(), 0..8)) {
            let s: String = chars.into_iter().collect();
            let by_rule = !s.chars().any(char::is_control) && !s.trim().is_empty();
            prop_assert_eq!(NAME.is_match(&s), by_rule, "{:?}", s);
        }

        #[test]
        fn email_pattern_is_the_address_rule(chars in proptest::collection::vec(tricky_char(), 0..10)) {
            let s: String = chars.into_iter().collect();
            let t = s.trim();
            let by_rule = !s.chars().any(char::is_control)
                && !t.chars().any(char::is_whitespace)
                && t.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && domain.split('.').all(|l| !l.is_empty())
                });
            prop_assert_eq!(EMAIL.is_match(&s), by_rule, "{:?}", s);
        }
    }
}
