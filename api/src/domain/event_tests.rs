use super::*;
use serde_json::json;

fn now() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn batch(v: Value) -> Result<EventBatch, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn event(at: &str) -> Value {
    json!({"kind": "click", "session_id": "s-1", "product_id": 3, "occurred_at": at})
}

#[test]
fn one_event_or_an_array_of_them() {
    let one = batch(event("2026-03-01T11:59:00Z")).unwrap();
    assert_eq!(one.0.len(), 1);
    let many = batch(json!([
        event("2026-03-01T11:59:00Z"),
        event("2026-03-01T11:58:00Z")
    ]));
    assert_eq!(many.unwrap().0.len(), 2);
    let checked = check_batch(one, now()).unwrap();
    assert_eq!(checked[0].kind, EventKind::Click);
    assert_eq!(checked[0].received_at, now());
    assert_eq!(checked[0].context, json!({}));
    assert_eq!(checked[0].id.get_version_num(), 7);
}

#[test]
fn shapes_the_schema_refuses_do_not_parse() {
    assert!(batch(json!("click")).is_err());
    assert!(
        batch(json!({"kind": "view", "session_id": "s", "product_id": 1,
                         "occurred_at": "2026-03-01T11:59:00Z"}))
        .unwrap_err()
        .contains("unknown event kind")
    );
    let mut extra = event("2026-03-01T11:59:00Z");
    extra["price"] = json!(1);
    assert!(batch(extra).unwrap_err().contains("unknown field"));
    let mut no_time = event("2026-03-01T11:59:00Z");
    no_time.as_object_mut().unwrap().remove("occurred_at");
    assert!(batch(no_time).unwrap_err().contains("occurred_at"));
}

#[test]
fn rules_refuse_the_whole_request() {
    let check = |v: Value| check_batch(batch(v).unwrap(), now());
    assert_eq!(check(json!([])), Err(EventError::BatchSize(0)));
    let big: Vec<Value> = (0..=MAX_BATCH)
        .map(|_| event("2026-03-01T11:59:00Z"))
        .collect();
    assert_eq!(check(json!(big)), Err(EventError::BatchSize(MAX_BATCH + 1)));
    let mut bad_session = event("2026-03-01T11:59:00Z");
    bad_session["session_id"] = json!("has space");
    let two = json!([event("2026-03-01T11:59:00Z"), bad_session]);
    assert_eq!(check(two), Err(EventError::Session { at: "[1].".into() }));
    assert_eq!(
        check(event("2026-03-01T12:05:01Z")),
        Err(EventError::Future { at: String::new() })
    );
    assert!(check(event("2026-03-01T12:05:00Z")).is_ok());
    assert_eq!(
        check(event("2026-02-28T11:59:59Z")),
        Err(EventError::TooLate { at: String::new() })
    );
    let mut zero = event("2026-03-01T11:59:00Z");
    zero["product_id"] = json!(0);
    assert_eq!(check(zero), Err(EventError::Product { at: String::new() }));
    let mut nested = event("2026-03-01T11:59:00Z");
    nested["context"] = json!({"tags": ["a"]});
    assert!(matches!(check(nested), Err(EventError::Context { .. })));
    let mut long = event("2026-03-01T11:59:00Z");
    long["context"] = json!({"page": "x".repeat(MAX_CONTEXT_TEXT + 1)});
    assert!(matches!(check(long), Err(EventError::Context { .. })));
    let mut keys = event("2026-03-01T11:59:00Z");
    keys["context"] = Value::Object(
        (0..=MAX_CONTEXT_KEYS)
            .map(|i| (i.to_string(), json!(i)))
            .collect(),
    );
    assert!(matches!(check(keys), Err(EventError::Context { .. })));
    // jsonb cannot hold NUL: refused as bad input, never a failed insert.
    let mut nul_key = event("2026-03-01T11:59:00Z");
    nul_key["context"] = json!({"a\0b": true});
    assert!(matches!(check(nul_key), Err(EventError::Context { .. })));
    let mut nul_text = event("2026-03-01T11:59:00Z");
    nul_text["context"] = json!({"page": "a\0"});
    assert!(matches!(check(nul_text), Err(EventError::Context { .. })));
    let mut fine = event("2026-03-01T11:59:00Z");
    fine["context"] = json!({"page": "menu", "position": 3, "promo": false, "ref": null});
    assert!(check(fine).is_ok());
}

#[test]
fn session_ids() {
    assert!(is_session_id("a"));
    assert!(is_session_id("0190f5c4-7b1e-7a6b-9f1e-2f3a4b5c6d7e"));
    assert!(!is_session_id(""));
    assert!(!is_session_id(&"a".repeat(65)));
    assert!(!is_session_id("a/b"));
    assert!(!is_session_id("é"));
}
