//! An event as it travels on the events stream: the JSON the API publishes, read back strictly
//! by the loader. A message that does not read is dead-lettered with a reason that names the
//! field, never its value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Impression,
    Click,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Impression => "impression",
            Kind::Click => "click",
        }
    }
}

/// One event (what `clickstream_ingest()` in OLAP takes, as an element of its array).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    pub id: Uuid,
    pub kind: Kind,
    pub session_id: String,
    #[serde(default)]
    pub customer_id: Option<i64>,
    pub product_id: i64,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    #[serde(default)]
    pub context: Map<String, Value>,
}

/// Reads a message's payload; Err is a reason fit for the dead-letter table (no values).
pub fn read(payload: &[u8]) -> Result<WireEvent, String> {
    let e: WireEvent = serde_json::from_slice(payload).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON",
            serde_json::error::Category::Data => {
                "not an event (a field is missing, unknown or of the wrong type)"
            }
            serde_json::error::Category::Io => "unreadable",
        };
        format!("{what} at line {} column {}", e.line(), e.column())
    })?;
    if e.session_id.is_empty() || e.session_id.len() > 64 {
        return Err("session_id is not 1 to 64 characters".into());
    }
    if e.product_id < 1 || e.customer_id.is_some_and(|c| c < 1) {
        return Err("product_id or customer_id is not a positive integer".into());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_strictly_and_reasons_hold_no_values() {
        let ok = br#"{"id":"0190f5c4-7b1e-7a6b-9f1e-2f3a4b5c6d7e","kind":"click","session_id":"s",
            "customer_id":null,"product_id":3,"occurred_at":"2026-03-01T11:59:00Z",
            "received_at":"2026-03-01T12:00:00Z","context":{"page":"menu"}}"#;
        let e = read(ok).unwrap();
        assert_eq!(e.kind, Kind::Click);
        let again: WireEvent = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(again, e);

        let secret = String::from_utf8_lossy(ok).replace("\"click\"", "\"secret-kind\"");
        let reason = read(secret.as_bytes()).unwrap_err();
        assert!(reason.starts_with("not an event"), "{reason}");
        assert!(!reason.contains("secret"), "{reason}");
        assert!(read(b"{").unwrap_err().starts_with("not JSON"));
        let zero = String::from_utf8_lossy(ok).replace("\"product_id\":3", "\"product_id\":0");
        assert!(read(zero.as_bytes()).is_err());
    }
}
