//! Clickstream events: what `POST /events` takes (one event, or an array of up to
//! [`MAX_BATCH`]), how it is checked, and the event as it is stored or published.
//!
//! An event is an `impression` (a product card shown) or a `click` (a product opened) in a
//! browsing session. The client says when it happened (`occurred_at`); the server keeps its own
//! receive time beside it and refuses a client clock more than [`MAX_CLOCK_SKEW`] ahead, or an
//! event older than [`ALLOWED_LATENESS`] (a client may buffer events that long, e.g. offline).
//! Ids are the server's (UUIDv7, time-ordered).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::fields;

/// The most events one request may carry.
pub const MAX_BATCH: usize = 100;
/// The largest `POST /events` body: room for [`MAX_BATCH`] events of the largest context
/// the schema allows (so a valid request is never refused for its size, and an oversized
/// batch is refused for its count).
pub const EVENTS_BODY_LIMIT_BYTES: usize = 4 * 1024 * 1024;
/// How far ahead of the server's clock a client's `occurred_at` may be.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// How old an event may be when it reaches the API (a late event is still attributed).
pub const ALLOWED_LATENESS: Duration = Duration::from_secs(24 * 3600);
/// A session id: 1 to 64 of letters, digits and `_ . : -`.
pub const SESSION_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";
/// Context: at most this many keys …
pub const MAX_CONTEXT_KEYS: usize = 16;
/// … of at most this many characters, each value a string of at most
/// [`MAX_CONTEXT_TEXT`] characters, a number, a boolean or null.
pub const MAX_CONTEXT_KEY: usize = 64;
pub const MAX_CONTEXT_TEXT: usize = 256;

/// Why events were refused (the whole request: nothing is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("a request carries 1 to {MAX_BATCH} events (got {0})")]
    BatchSize(usize),
    #[error("{at}session_id must match {SESSION_PATTERN}")]
    Session { at: String },
    #[error("{at}product_id must be a positive integer")]
    Product { at: String },
    #[error("{at}customer_id must be a positive integer or null")]
    Customer { at: String },
    #[error("{at}occurred_at is more than {} s ahead of the server's clock", MAX_CLOCK_SKEW.as_secs())]
    Future { at: String },
    #[error("{at}occurred_at is older than the allowed lateness of {} h", ALLOWED_LATENESS.as_secs() / 3600)]
    TooLate { at: String },
    #[error("{at}context {what}")]
    Context { at: String, what: String },
    #[error("too many events: more than {0} per second are accepted; retry later")]
    RateLimited(u32),
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum EventKind {
    /// A product card was shown.
    Impression,
    /// A product was opened.
    Click,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::Click => "click",
        }
    }
}

impl TryFrom<String> for EventKind {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "impression" => Ok(Self::Impression),
            "click" => Ok(Self::Click),
            _ => Err(format!(
                "unknown event kind {text:?}; expected impression or click"
            )),
        }
    }
}

/// One event as the client sends it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    pub kind: EventKind,
    /// The browsing session (also given to `POST /orders` to attribute the order).
    #[schema(schema_with = session_schema)]
    pub session_id: String,
    /// Null or absent when the visitor is not known.
    #[serde(default, deserialize_with = "fields::nullable_integer")]
    #[schema(minimum = 1)]
    pub customer_id: Option<i64>,
    #[serde(deserialize_with = "fields::integer")]
    #[schema(minimum = 1)]
    pub product_id: i64,
    /// The client's time of the event (RFC 3339).
    pub occurred_at: DateTime<Utc>,
    /// Small free-form context: at most 16 keys, values strings (≤ 256 characters), numbers,
    /// booleans or null.
    #[serde(default)]
    #[schema(schema_with = context_schema)]
    pub context: Option<Map<String, Value>>,
}

/// The JSON Schema of a session id.
pub fn session_schema() -> Schema {
    fields::string_schema(SESSION_PATTERN, 1, 64, false)
}

/// The JSON Schema of a context: an object (or null) of at most [`MAX_CONTEXT_KEYS`] scalar
/// values.
pub fn context_schema() -> Schema {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    let scalar = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_CONTEXT_TEXT)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(MAX_CONTEXT_KEYS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_CONTEXT_KEY)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(
            scalar.build(),
        )))))
        .into()
}

/// `POST /events`: one event, or an array of them.
#[derive(Debug, Clone)]
pub struct EventBatch(pub Vec<NewEvent>);

impl<'de> Deserialize<'de> for EventBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OneOrMany;
        impl<'de> Visitor<'de> for OneOrMany {
            type Value = EventBatch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event object or an array of events")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EventBatch, A::Error> {
                NewEvent::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|e| EventBatch(vec![e]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<EventBatch, A::Error> {
                Vec::<NewEvent>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(EventBatch)
            }
        }
        d.deserialize_any(OneOrMany)
    }
}

impl PartialSchema for EventBatch {
    fn schema() -> RefOr<Schema> {
        let one = RefOr::Ref(Ref::from_schema_name("NewEvent"));
        let many = ArrayBuilder::new()
            .items(RefOr::Ref(Ref::from_schema_name("NewEvent")))
            .min_items(Some(1))
            .max_items(Some(MAX_BATCH))
            .build();
        OneOfBuilder::new().item(one).item(many).into()
    }
}

impl ToSchema for EventBatch {
    fn name() -> std::borrow::Cow<'static, str> {
        "EventBatch".into()
    }
}

/// A checked event with its id and receive time: what is stored or published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: Uuid,
    pub kind: EventKind,
    pub session_id: String,
    pub customer_id: Option<i64>,
    pub product_id: i64,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub context: Value,
}

/// `202 Accepted`: the ids given to the events, in the order they were sent.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Accepted {
    pub accepted: usize,
    pub ids: Vec<Uuid>,
}

/// Whether `s` is a session id ([`SESSION_PATTERN`]).
pub fn is_session_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn check_context(at: &str, context: Option<Map<String, Value>>) -> Result<Value, EventError> {
    let bad = |what: String| EventError::Context {
        at: at.to_owned(),
        what,
    };
    let map = context.unwrap_or_default();
    if map.len() > MAX_CONTEXT_KEYS {
        return Err(bad(format!("has more than {MAX_CONTEXT_KEYS} keys")));
    }
    for (key, value) in &map {
        if key.is_empty() || key.chars().count() > MAX_CONTEXT_KEY {
            return Err(bad(format!("keys are 1 to {MAX_CONTEXT_KEY} characters")));
        }
        // PostgreSQL's jsonb cannot hold it: refused here rather than failing the insert.
        if key.contains('\0') || matches!(value, Value::String(s) if s.contains('\0')) {
            return Err(bad(
                "keys and strings cannot hold the NUL character (\\u0000)".into(),
            ));
        }
        match value {
            Value::String(s) if s.chars().count() > MAX_CONTEXT_TEXT => {
                return Err(bad(format!(
                    "strings are at most {MAX_CONTEXT_TEXT} characters"
                )))
            }
            Value::Array(_) | Value::Object(_) => {
                return Err(bad(
                    "values are strings, numbers, booleans or null (no arrays or objects)".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(Value::Object(map))
}

/// Checks every event of `batch` against the server's clock `now`; all or nothing.
pub fn check_batch(batch: EventBatch, now: DateTime<Utc>) -> Result<Vec<Event>, EventError> {
    let n = batch.0.len();
    if n == 0 || n > MAX_BATCH {
        return Err(EventError::BatchSize(n));
    }
    let received_at = now.trunc_subsecs(6);
    let skew = chrono::Duration::from_std(MAX_CLOCK_SKEW).unwrap_or_default();
    let lateness = chrono::Duration::from_std(ALLOWED_LATENESS).unwrap_or_default();
    let many = n > 1;
    batch
        .0
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let at = if many {
                format!("[{i}].")
            } else {
                String::new()
            };
            if !is_session_id(&e.session_id) {
                return Err(EventError::Session { at });
            }
            if e.product_id < 1 {
                return Err(EventError::Product { at });
            }
            if e.customer_id.is_some_and(|c| c < 1) {
                return Err(EventError::Customer { at });
            }
            if e.occurred_at > now + skew {
                return Err(EventError::Future { at });
            }
            if e.occurred_at < now - lateness {
                return Err(EventError::TooLate { at });
            }
            let context = check_context(&at, e.context)?;
            Ok(Event {
                id: Uuid::now_v7(),
                kind: e.kind,
                session_id: e.session_id,
                customer_id: e.customer_id,
                product_id: e.product_id,
                occurred_at: e.occurred_at.trunc_subsecs(6),
                received_at,
                context,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
