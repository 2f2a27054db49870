//! Whether the star's type for an attribute holds every value of a source column's type
//! (pure): read it as it is, through a cast, widen the star's column, or read it value by
//! value — a row whose value the star's type refuses is then left out and dead-lettered.
//!
//! Whatever the replica column's type, the input view's column has the star's type: the
//! star's functions keep their plans (PL/pgSQL refuses a record whose field changed type
//! within a session), and the star's columns never see another type than their own.

use super::Role;

/// How the input view reads a replica column (`star_bindings.read`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The column itself: it has the star's type.
    AsIs,
    /// `column::star_type`, which holds every value (int → bigint, varchar → text, …).
    Cast,
    /// `column::text::star_type` (floating point into numeric: its shortest exact text).
    ViaText,
    /// A timestamp without time zone or a date, taken as UTC.
    Utc,
    /// Each value read by the star type's input function; one it refuses leaves its row out.
    PerRow,
}

impl Read {
    pub fn as_str(self) -> &'static str {
        match self {
            Read::AsIs => "as_is",
            Read::Cast => "cast",
            Read::ViaText => "via_text",
            Read::Utc => "utc",
            Read::PerRow => "per_row",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "cast" => Read::Cast,
            "via_text" => Read::ViaText,
            "utc" => Read::Utc,
            "per_row" => Read::PerRow,
            _ => Read::AsIs,
        }
    }
}

/// What a source column's (new) type means for the star.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The star's type holds every value: read this way.
    Held(Read),
    /// The star's columns widen to this type, which holds every value of both.
    Widen(String),
    /// Some values may not be held: read value by value.
    PerRow,
}

/// The type without its modifier: `numeric(12,2)` → `numeric`.
fn base(t: &str) -> &str {
    t.split('(').next().unwrap_or(t).trim()
}

const INTEGERS: [&str; 3] = ["smallint", "integer", "bigint"];
const FLOATS: [&str; 2] = ["real", "double precision"];

/// How a star attribute of type `star` (and `role`) reads a replica column of type `replica`
/// (both as `format_type` spells them).
pub fn fit(star: &str, replica: &str, role: Role) -> Fit {
    if star == replica {
        return Fit::Held(Read::AsIs);
    }
    let (s, r) = (base(star), base(replica));
    let numeric_star = s == "numeric" && !star.contains('(');
    match s {
        "text" => Fit::Held(Read::Cast),
        "bigint" if INTEGERS.contains(&r) => Fit::Held(Read::Cast),
        "bigint" if role == Role::Measure && (r == "numeric" || FLOATS.contains(&r)) => {
            Fit::Widen("numeric".into())
        }
        "numeric" if numeric_star && (INTEGERS.contains(&r) || r == "numeric") => {
            Fit::Held(Read::Cast)
        }
        "numeric" if numeric_star && FLOATS.contains(&r) => Fit::Held(Read::ViaText),
        "timestamp with time zone" if r == "timestamp without time zone" || r == "date" => {
            Fit::Held(Read::Utc)
        }
        _ => Fit::PerRow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_type_is_read_as_it_is_and_narrower_integers_cast() {
        assert_eq!(fit("bigint", "bigint", Role::Key), Fit::Held(Read::AsIs));
        assert_eq!(
            fit("bigint", "integer", Role::Measure),
            Fit::Held(Read::Cast)
        );
        assert_eq!(
            fit("bigint", "smallint", Role::Member),
            Fit::Held(Read::Cast)
        );
        assert_eq!(
            fit("numeric", "numeric(12,2)", Role::Measure),
            Fit::Held(Read::Cast)
        );
        assert_eq!(
            fit("numeric", "integer", Role::Measure),
            Fit::Held(Read::Cast)
        );
    }

    #[test]
    fn text_holds_every_value() {
        assert_eq!(
            fit("text", "character varying(40)", Role::Label),
            Fit::Held(Read::Cast)
        );
        assert_eq!(
            fit("text", "character(5)", Role::Label),
            Fit::Held(Read::Cast)
        );
        assert_eq!(
            fit("text", "integer", Role::Attribute),
            Fit::Held(Read::Cast)
        );
        assert_eq!(fit("text", "jsonb", Role::Attribute), Fit::Held(Read::Cast));
    }

    #[test]
    fn a_measure_widens_to_numeric_and_a_key_does_not() {
        assert_eq!(
            fit("bigint", "numeric(10,2)", Role::Measure),
            Fit::Widen("numeric".into())
        );
        assert_eq!(
            fit("bigint", "double precision", Role::Measure),
            Fit::Widen("numeric".into())
        );
        assert_eq!(fit("bigint", "numeric(10,2)", Role::Member), Fit::PerRow);
        assert_eq!(fit("bigint", "numeric", Role::Key), Fit::PerRow);
        assert_eq!(
            fit("numeric", "double precision", Role::Measure),
            Fit::Held(Read::ViaText)
        );
    }

    #[test]
    fn timestamps_and_dates_become_utc_instants() {
        assert_eq!(
            fit(
                "timestamp with time zone",
                "timestamp without time zone",
                Role::Time
            ),
            Fit::Held(Read::Utc)
        );
        assert_eq!(
            fit("timestamp with time zone", "date", Role::Time),
            Fit::Held(Read::Utc)
        );
        assert_eq!(
            fit("timestamp with time zone", "text", Role::Time),
            Fit::PerRow
        );
        assert_eq!(
            fit("date", "timestamp with time zone", Role::Attribute),
            Fit::PerRow
        );
    }

    #[test]
    fn what_may_not_hold_is_read_value_by_value() {
        assert_eq!(fit("bigint", "text", Role::Measure), Fit::PerRow);
        assert_eq!(fit("uuid", "text", Role::Key), Fit::PerRow);
        assert_eq!(fit("boolean", "text", Role::Attribute), Fit::PerRow);
        assert_eq!(fit("numeric", "money", Role::Measure), Fit::PerRow);
        assert_eq!(
            fit("numeric(10,2)", "numeric(12,2)", Role::Measure),
            Fit::PerRow
        );
    }

    #[test]
    fn reads_round_trip_their_names() {
        for r in [
            Read::AsIs,
            Read::Cast,
            Read::ViaText,
            Read::Utc,
            Read::PerRow,
        ] {
            assert_eq!(Read::parse(r.as_str()), r);
        }
    }
}
