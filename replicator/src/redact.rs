//! Error text fit for logs, metrics, `/status` and pages: row values left out.
//!
//! PostgreSQL quotes the offending value in many messages (`invalid input syntax for type
//! integer: "abc"`, `value "3000000000" is out of range`, `Key (id)=(5) already exists`). The
//! full text goes only into OLAP (`cdc_dead_letters.error`); everything printed goes through
//! here: the SQLSTATE, the message with every quoted part replaced by `"…"`, and the table,
//! column and constraint names the server reports apart from the message.

/// Whether an error is worth retrying, by SQLSTATE class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Connection lost, server shutting down, serialization failure, deadlock, lock or
    /// statement timeout, out of resources: try again later.
    Transient,
    /// Bad data, a constraint, an undefined object, a bug: the same input fails again.
    Deterministic,
}

/// The class of a database error (connection-level errors are transient).
pub fn classify(e: &sqlx::Error) -> Class {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => Class::Transient,
        sqlx::Error::Database(db) => classify_code(db.code().as_deref().unwrap_or("")),
        _ => Class::Deterministic,
    }
}

/// The class of a SQLSTATE.
pub fn classify_code(code: &str) -> Class {
    let transient = code.starts_with("08") // connection exception
        || code.starts_with("40") // serialization failure, deadlock
        || code.starts_with("53") // insufficient resources (disk full, too many connections)
        || code.starts_with("57") // admin shutdown, crash shutdown, query canceled (statement timeout)
        || code.starts_with("58") // system error (I/O)
        || code == "55P03" // lock not available (lock_timeout)
        || code == "55006"; // object in use (a slot held by a process going away)
    if transient {
        Class::Transient
    } else {
        Class::Deterministic
    }
}

/// `message` with every double-quoted part and every `(…)=(…)` value list elided.
pub fn message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // Up to the closing quote ("" inside is an escaped quote).
                loop {
                    match chars.next() {
                        None => break,
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                        }
                        Some('"') => break,
                        Some(_) => {}
                    }
                }
                out.push_str("\"…\"");
            }
            '=' if out.ends_with(')') && chars.peek() == Some(&'(') => {
                let mut depth = 0;
                for d in chars.by_ref() {
                    match d {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                out.push_str("=(…)");
            }
            c => out.push(c),
        }
    }
    out
}

/// A database error for logs: SQLSTATE, redacted message, and the names the server reports.
pub fn db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut s = format!(
                "{} (SQLSTATE {})",
                message(db.message()),
                db.code().as_deref().unwrap_or("?")
            );
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let names: Vec<String> = [
                    ("table", pg.table()),
                    ("column", pg.column()),
                    ("constraint", pg.constraint()),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
                .collect();
                if !names.is_empty() {
                    s.push_str(&format!(" [{}]", names.join(", ")));
                }
            }
            s
        }
        // Other sqlx errors carry no row values (I/O, protocol, pool, decoding of our own
        // columns), but go through the same elision in case a server text is inside.
        other => message(&other.to_string()),
    }
}

/// The SQLSTATE of a database error.
pub fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The full server text of an error (for `cdc_dead_letters` only: it may hold row values).
pub fn full(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut s = db.message().to_owned();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(d) = pg.detail() {
                    s.push_str(&format!(" — {d}"));
                }
                if let Some(w) = pg.r#where() {
                    s.push_str(&format!(" — {w}"));
                }
            }
            s
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_elided() {
        assert_eq!(
            message(r#"invalid input syntax for type integer: "MARKER-123""#),
            r#"invalid input syntax for type integer: "…""#
        );
        assert_eq!(
            message(r#"value "3000000000" is out of range for type integer"#),
            r#"value "…" is out of range for type integer"#
        );
        assert_eq!(
            message(r#"Key (id, "we""ird")=(5, secret) already exists."#),
            r#"Key (id, "…")=(…) already exists."#
        );
        assert_eq!(message("no quotes here"), "no quotes here");
        assert_eq!(message(r#"unterminated "abc"#), r#"unterminated "…""#);
    }

    #[test]
    fn classes() {
        for t in [
            "08006", "40001", "40P01", "57014", "57P01", "53100", "55P03",
        ] {
            assert_eq!(classify_code(t), Class::Transient, "{t}");
        }
        for d in [
            "22003", "22P02", "23505", "42703", "42P01", "0A000", "XX000",
        ] {
            assert_eq!(classify_code(d), Class::Deterministic, "{d}");
        }
    }
}
