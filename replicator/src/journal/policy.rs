//! The journal's decisions, without I/O: what a retention setting means, where retention
//! cuts, how wide the next partition is, and how partitions are named.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::lsn::Lsn;

/// `--journal-retention`: how much history the journal keeps before the latest compaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Nothing is ever compacted or dropped: the journal is a full audit trail.
    #[default]
    Off,
    /// Changes older than this are compacted (whole partitions at a time).
    Age(Duration),
    /// The oldest partitions are compacted while the journal is larger than this (bytes).
    Size(u64),
}

impl std::str::FromStr for Retention {
    type Err = String;

    /// `off`, an age (`90s`, `30m`, `12h`, `30d`, `2w`) or a size (`500MB`, `50GB`, `1TB`).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "off" || t == "none" || t == "0" {
            return Ok(Self::Off);
        }
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad(s))?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad(s))?;
        if n == 0 {
            return Err(bad(s));
        }
        let secs = |k: u64| Ok(Self::Age(Duration::from_secs(n.saturating_mul(k))));
        let bytes = |k: u64| Ok(Self::Size(n.saturating_mul(k)));
        match unit.trim() {
            "s" => secs(1),
            "m" | "min" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            "w" => secs(7 * 86_400),
            "mb" | "mib" => bytes(1 << 20),
            "gb" | "gib" => bytes(1 << 30),
            "tb" | "tib" => bytes(1 << 40),
            _ => Err(bad(s)),
        }
    }
}

fn bad(s: &str) -> String {
    format!(
        "journal retention {s:?}: expected off, an age (90s, 30m, 12h, 30d, 2w) or a size \
         (500MB, 50GB, 1TB)"
    )
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Age(d) => write!(f, "{}s", d.as_secs()),
            Self::Size(b) => write!(f, "{}MB", b >> 20),
        }
    }
}

/// One partition of the journal as retention sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub lo: Lsn,
    pub hi: Lsn,
    pub bytes: i64,
    /// Its last change's commit time; `None` when it is empty.
    pub newest: Option<DateTime<Utc>>,
}

/// Where retention cuts now: the upper bound of the newest partition it may compact
/// (`parts` in LSN order, the default partition left out), or `None` when nothing is due.
///
/// A partition is due when its last change is older than the age (or, by size, while the
/// partitions after it still hold more than the size). Only history is cut: partitions
/// ending at or below `limit` (the checkpoint, a backfill chunk still being read, …) and
/// beyond `done` (the latest cut). At most `max_parts` partitions holding changes are taken
/// in one pass, so that one compaction reads a bounded part of the journal.
pub fn retention_cut(
    parts: &[Part],
    retention: Retention,
    now: DateTime<Utc>,
    limit: Lsn,
    done: Lsn,
    max_parts: usize,
) -> Option<Lsn> {
    let total: i64 = parts.iter().map(|p| p.bytes).sum();
    let mut kept = total;
    let mut cut = None;
    let mut taken = 0;
    for p in parts {
        if p.hi > limit {
            break;
        }
        let due = match retention {
            Retention::Off => false,
            Retention::Age(age) => {
                let oldest_kept = now - chrono::Duration::from_std(age).unwrap_or_default();
                p.newest.is_none_or(|t| t < oldest_kept)
            }
            Retention::Size(size) => kept > i64::try_from(size).unwrap_or(i64::MAX),
        };
        if !due {
            break;
        }
        kept -= p.bytes;
        if p.hi <= done {
            continue;
        }
        if p.newest.is_some() {
            if taken == max_parts {
                break;
            }
            taken += 1;
        }
        cut = Some(p.hi);
    }
    cut
}

/// Bounds on a partition's width, in bytes of source WAL.
pub const MIN_WIDTH: u64 = 16 << 20;
pub const MAX_WIDTH: u64 = 64 << 30;

/// How long a partition should take to fill: an eighth of the retention age (so that about
/// eight partitions make up the window and disk use steps down by an eighth at a time),
/// between 10 s and a day; a day without an age.
pub fn partition_span(retention: Retention) -> Duration {
    match retention {
        Retention::Age(age) => {
            (age / 8).clamp(Duration::from_secs(10), Duration::from_secs(86_400))
        }
        _ => Duration::from_secs(86_400),
    }
}

/// The width of the next partition: the source's WAL rate (bytes per second) times `span`,
/// rounded up to a MiB and kept within [`MIN_WIDTH`, `MAX_WIDTH`].
pub fn partition_width(wal_bytes_per_sec: f64, span: Duration) -> u64 {
    let raw = (wal_bytes_per_sec.max(0.0) * span.as_secs_f64()) as u64;
    raw.div_ceil(1 << 20)
        .saturating_mul(1 << 20)
        .clamp(MIN_WIDTH, MAX_WIDTH)
}

/// The partitions to create so that the journal is covered up to `ahead_of` plus `count`
/// widths: `(lo, hi)` pairs from `tail` (the end of the last partition, `None` for none).
/// What lies between the tail and the width `ahead_of` is in (the whole past for a new
/// journal, a stream that was down for a while) is one partition.
pub fn partitions_to_create(
    tail: Option<Lsn>,
    ahead_of: Lsn,
    width: u64,
    count: u64,
) -> Vec<(Lsn, Lsn)> {
    let width = width.max(1);
    let target = ahead_of.0.saturating_add(width.saturating_mul(count));
    let mut lo = tail.map_or(0, |t| t.0);
    let mut out = Vec::new();
    let behind = ahead_of.0 / width * width;
    if behind > lo {
        out.push((Lsn(lo), Lsn(behind)));
        lo = behind;
    }
    while lo < target {
        // Bounds on whole widths from 0/0, so that they read well.
        let hi = (lo / width + 1).saturating_mul(width);
        out.push((Lsn(lo), Lsn(hi)));
        lo = hi;
    }
    out
}

/// A partition's table name: its lower bound in 16 lowercase hex digits (names sort like the bounds, and need no quotes).
pub fn partition_name(lo: Lsn) -> String {
    format!("cdc_events_p{:016x}", lo.0)
}

/// The bounds of `FOR VALUES FROM ('0/0') TO ('1/0')`, as `pg_get_expr` prints them.
pub fn parse_bound(text: &str) -> Option<(Lsn, Lsn)> {
    let rest = text.strip_prefix("FOR VALUES FROM ('")?;
    let (lo, rest) = rest.split_once("') TO ('")?;
    let hi = rest.strip_suffix("')")?;
    Some((lo.parse().ok()?, hi.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn retention_reads_ages_sizes_and_off() {
        assert_eq!(
            "30d".parse(),
            Ok(Retention::Age(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!("90s".parse(), Ok(Retention::Age(Duration::from_secs(90))));
        assert_eq!(
            "2w".parse(),
            Ok(Retention::Age(Duration::from_secs(14 * 86_400)))
        );
        assert_eq!("50GB".parse(), Ok(Retention::Size(50 << 30)));
        assert_eq!("off".parse(), Ok(Retention::Off));
        for bad in ["", "30", "d", "-1d", "0d", "3 fortnights", "1.5d"] {
            assert!(bad.parse::<Retention>().is_err(), "{bad}");
        }
    }

    fn part(lo: u64, hi: u64, bytes: i64, newest: Option<&str>) -> Part {
        Part {
            lo: Lsn(lo),
            hi: Lsn(hi),
            bytes,
            newest: newest.map(at),
        }
    }

    #[test]
    fn age_retention_cuts_after_the_newest_expired_partition_below_the_limit() {
        let now = at("2026-03-01T00:00:00Z");
        let parts = [
            part(0, 100, 10, Some("2026-01-01T00:00:00Z")),
            part(100, 200, 10, None),
            part(200, 300, 10, Some("2026-01-20T00:00:00Z")),
            part(300, 400, 10, Some("2026-02-20T00:00:00Z")),
            part(400, 500, 10, None),
        ];
        let age = Retention::Age(Duration::from_secs(30 * 86_400));
        assert_eq!(
            retention_cut(&parts, age, now, Lsn(1000), Lsn(0), 10),
            Some(Lsn(300))
        );
        // Not past the limit (the checkpoint), not again below the latest cut.
        assert_eq!(
            retention_cut(&parts, age, now, Lsn(250), Lsn(0), 10),
            Some(Lsn(200))
        );
        assert_eq!(
            retention_cut(&parts, age, now, Lsn(1000), Lsn(300), 10),
            None
        );
        // One partition with changes per pass.
        assert_eq!(
            retention_cut(&parts, age, now, Lsn(1000), Lsn(0), 1),
            Some(Lsn(200))
        );
        assert_eq!(
            retention_cut(&parts, Retention::Off, now, Lsn(1000), Lsn(0), 10),
            None
        );
    }

    #[test]
    fn size_retention_cuts_while_the_rest_is_over_the_size() {
        let now = at("2026-03-01T00:00:00Z");
        let t = Some("2026-02-28T00:00:00Z");
        let parts = [
            part(0, 100, 40, t),
            part(100, 200, 40, t),
            part(200, 300, 40, t),
        ];
        assert_eq!(
            retention_cut(&parts, Retention::Size(50), now, Lsn(1000), Lsn(0), 10),
            Some(Lsn(200))
        );
        assert_eq!(
            retention_cut(&parts, Retention::Size(200), now, Lsn(1000), Lsn(0), 10),
            None
        );
    }

    #[test]
    fn partitions_are_created_on_whole_widths_across_digit_boundaries() {
        let w = MIN_WIDTH;
        let made = partitions_to_create(Some(Lsn(0xFFFF_FFFF - w + 1)), Lsn(0xFFFF_FFFF), w, 2);
        assert_eq!(made.first().unwrap().0, Lsn(0xFFFF_FFFF - w + 1));
        assert_eq!(made.last().unwrap().1, Lsn(0x1_0000_0000 + 2 * w));
        for pair in made.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
        }
        // The first partition starts at 0/0.
        assert_eq!(
            partitions_to_create(None, Lsn(5), w, 1)[0],
            (Lsn(0), Lsn(w))
        );
        assert!(partitions_to_create(Some(Lsn(10 * w)), Lsn(w), w, 2).is_empty());
        // Far behind the position: one partition up to it, then whole widths.
        let made = partitions_to_create(Some(Lsn(3)), Lsn(100 * w + 7), w, 2);
        assert_eq!(
            made,
            vec![
                (Lsn(3), Lsn(100 * w)),
                (Lsn(100 * w), Lsn(101 * w)),
                (Lsn(101 * w), Lsn(102 * w)),
                (Lsn(102 * w), Lsn(103 * w))
            ]
        );
        assert_eq!(
            partition_name("F/FF000000".parse().unwrap()),
            "cdc_events_p0000000fff000000"
        );
        assert!(partition_name(Lsn(0xFFFF_FFFF)) < partition_name(Lsn(0x1_0000_0000)));
    }

    #[test]
    fn widths_follow_the_rate_within_bounds() {
        let span = partition_span(Retention::Age(Duration::from_secs(8 * 3600)));
        assert_eq!(span, Duration::from_secs(3600));
        assert_eq!(partition_width(0.0, span), MIN_WIDTH);
        assert_eq!(partition_width(1e6, span), 3434 << 20);
        assert_eq!(partition_width(1e12, span), MAX_WIDTH);
        assert_eq!(
            partition_span(Retention::Age(Duration::from_secs(30))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn bounds_read_as_postgres_prints_them() {
        assert_eq!(
            parse_bound("FOR VALUES FROM ('0/0') TO ('1/A000000')"),
            Some((Lsn(0), Lsn(0x1_0A00_0000)))
        );
        assert_eq!(parse_bound("DEFAULT"), None);
    }
}
