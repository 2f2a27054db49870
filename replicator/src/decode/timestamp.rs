//! PostgreSQL timestamps on the wire: microseconds since 2000-01-01 00:00:00 UTC.

use chrono::{DateTime, Utc};

/// 2000-01-01 00:00:00 UTC in microseconds since the Unix epoch.
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// The instant of a PostgreSQL wire timestamp, or `None` when it falls outside chrono's
/// range (as `infinity` and `-infinity`, sent as `i64::MAX` and `i64::MIN`, do).
pub fn pg_timestamp_to_chrono(micros: i64) -> Option<DateTime<Utc>> {
    micros
        .checked_add(PG_EPOCH_UNIX_MICROS)
        .and_then(DateTime::from_timestamp_micros)
}

/// The PostgreSQL wire timestamp of an instant (saturating at the ends of `i64`).
pub fn chrono_to_pg_timestamp(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros().saturating_sub(PG_EPOCH_UNIX_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_the_postgres_epoch() {
        let epoch = pg_timestamp_to_chrono(0).unwrap();
        assert_eq!(epoch.to_rfc3339(), "2000-01-01T00:00:00+00:00");
        assert_eq!(chrono_to_pg_timestamp(epoch), 0);
    }

    #[test]
    fn converts_both_ways() {
        let time = DateTime::parse_from_rfc3339("2024-03-05T12:34:56.789012Z")
            .unwrap()
            .with_timezone(&Utc);
        let micros = chrono_to_pg_timestamp(time);
        assert_eq!(micros, 762_957_296_789_012);
        assert_eq!(pg_timestamp_to_chrono(micros), Some(time));
        let before = pg_timestamp_to_chrono(-1).unwrap();
        assert_eq!(before.to_rfc3339(), "1999-12-31T23:59:59.999999+00:00");
    }

    #[test]
    fn infinities_have_no_instant() {
        assert_eq!(pg_timestamp_to_chrono(i64::MAX), None);
        assert_eq!(pg_timestamp_to_chrono(i64::MIN), None);
    }
}
