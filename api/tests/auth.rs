//! Who may do what, derived from the API's own OpenAPI document: every operation it declares
//! secured is called with no key, a malformed key, an unknown key, a revoked key, a key
//! lacking its scope and a key holding exactly its scope — 401, 401, 401, 401, 403 and 2xx —
//! and after every refusal the OLTP database (all eight tables and the keys) is unchanged and
//! the answer names no customer. Then: the failure limit under a burst of wrong keys (429 with
//! `Retry-After`, a valid key still served, another client untouched), a wrong key for a known
//! id taking as long as an unknown one (statistically, loosely), and no key in any log line
//! or in `/metrics`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use brewlytics_support::auth::key::{NewKey, PresentedKey};
use brewlytics_support::auth::metrics::Reason;
use brewlytics_support::auth::{LimitConfig, PeerAddr, Scope};
use common::{Fixtures, Resp, TestApp};
use serde_json::{json, Value};
use tower::ServiceExt;

/// What a table holds, as one digest per table (the keys without their last use, which a
/// successful request may move).
async fn fingerprint(t: &TestApp) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    for table in common::TABLES {
        let sql = format!(
            "select coalesce(md5(string_agg(t::text, '|' order by t::text)), '') from {table} t"
        );
        out.insert(
            table,
            sqlx::query_scalar(&sql).fetch_one(&t.pool).await.unwrap(),
        );
    }
    let keys: String = sqlx::query_scalar(
        "select coalesce(md5(string_agg(concat_ws(',', id, name, scopes, secret_hash, revoked_at), '|' order by id)), '')
         from auth.api_keys",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    out.insert("auth.api_keys", keys);
    out
}

/// A request that succeeds for `method path` with the right key: its URI and body. Each call
/// may place an order of its own to act on.
async fn valid_request(
    t: &TestApp,
    f: &Fixtures,
    method: &str,
    path: &str,
    n: usize,
) -> (String, Option<Value>) {
    let order = || async {
        let r = t.call("POST", "/orders", Some(f.order())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["id"].as_str().unwrap().to_owned()
    };
    match (method, path) {
        ("post", "/orders" | "/orders/new") => (path.into(), Some(f.order())),
        ("get" | "delete", "/orders/{id}") => (format!("/orders/{}", order().await), None),
        ("patch", "/orders/{id}") => (
            format!("/orders/{}", order().await),
            Some(json!({"status": "preparing"})),
        ),
        ("post", "/products" | "/products/new") => (
            path.into(),
            Some(json!({"name": format!("Matrix brew {n}"), "category": "coffee", "price": "3.10"})),
        ),
        ("patch", "/products/{id}") => (
            format!("/products/{}", f.espresso),
            Some(json!({"price": format!("2.{:02}", 50 + n % 40)})),
        ),
        ("post", "/customers" | "/customers/new") => (
            path.into(),
            Some(json!({"name": format!("Matrix {n}"), "email": format!("matrix{n}@example.org")})),
        ),
        ("post", "/employees") => (
            path.into(),
            Some(json!({"name": format!("Staff {n}"), "store_id": f.store})),
        ),
        ("get", "/employees/active" | "/stores" | "/metrics") => (path.into(), None),
        ("post", "/inventory/restock") => (
            path.into(),
            Some(json!({"store_id": f.store, "product_id": f.espresso, "quantity": 5})),
        ),
        ("post", "/events") => (
            path.into(),
            Some(json!({"kind": "click", "session_id": format!("matrix-{n}"),
                        "product_id": f.espresso, "occurred_at": chrono::Utc::now()})),
        ),
        _ => panic!(
            "{method} {path} is secured in the OpenAPI document but this test has no request for it: add one"
        ),
    }
}

/// Scopes that do not allow `scope` (a key with all of them must be refused with 403).
fn all_but(scope: Scope) -> Vec<Scope> {
    Scope::ALL
        .into_iter()
        .filter(|s| !brewlytics_support::auth::Scopes::new([*s]).allows(scope))
        .collect()
}

fn no_customer(r: &Resp, what: &str) {
    for personal in ["Ada", "ada@example.com", "@example.org"] {
        assert!(
            !r.text.contains(personal),
            "{what} answered {personal}: {}",
            r.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_refuses_what_it_must_and_writes_nothing() {
    let started = Instant::now();
    let t = TestApp::new("auth_matrix").await;
    let f = t.fixtures().await;
    let doc = t.call_bare("GET", "/openapi.json", None, &[]).await;
    assert_eq!(doc.status, StatusCode::OK, "/openapi.json stays open");

    // The document's operations and the scope each declares.
    let mut secured = Vec::new();
    let mut open = Vec::new();
    for (path, item) in doc.json["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            match op["security"][0]["api_key"][0].as_str() {
                Some(scope) => {
                    let scope: Scope = scope.parse().unwrap();
                    for status in ["401", "403", "429"] {
                        assert!(
                            op["responses"][status].is_object(),
                            "{method} {path} does not document {status}"
                        );
                    }
                    secured.push((method.clone(), path.clone(), scope));
                }
                None => open.push((method.clone(), path.clone())),
            }
        }
    }
    assert_eq!(
        open,
        [
            ("get".to_owned(), "/health".to_owned()),
            ("get".into(), "/openapi.json".into())
        ],
        "only /health and /openapi.json are open"
    );
    assert!(secured.len() >= 15, "{secured:?}");
    for (method, path) in &open {
        let r = t.call_bare(&method.to_uppercase(), path, None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}");
    }

    // One key per scope with exactly it, its revoked twin, and one with every other scope.
    let mut right = BTreeMap::new();
    let mut revoked = BTreeMap::new();
    let mut wrong = BTreeMap::new();
    for scope in Scope::ALL {
        right.insert(scope, t.key(&format!("right {scope}"), &[scope]).await);
        revoked.insert(scope, t.key(&format!("revoked {scope}"), &[scope]).await);
        t.revoke(&format!("revoked {scope}")).await;
        let others = all_but(scope);
        if !others.is_empty() {
            wrong.insert(scope, t.key(&format!("wrong {scope}"), &others).await);
        }
    }
    let unknown = NewKey::generate().text;

    let mut rows = 0;
    for (n, (method, path, scope)) in secured.iter().enumerate() {
        let (uri, body) = valid_request(&t, &f, method, path, n).await;
        let m = method.to_uppercase();
        let what = format!("{m} {path}");
        let bearer = |k: &str| format!("Bearer {k}");
        let refusals: [(&str, Option<String>, StatusCode); 5] = [
            ("no key", None, StatusCode::UNAUTHORIZED),
            (
                "a malformed key",
                Some("Bearer not-a-key".into()),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "an unknown key",
                Some(bearer(&unknown)),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "a revoked key",
                Some(bearer(&revoked[scope])),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "a key without the scope",
                Some(bearer(&wrong[scope])),
                StatusCode::FORBIDDEN,
            ),
        ];
        for (who, auth, status) in refusals {
            let before = fingerprint(&t).await;
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            let r = t.call_bare(&m, &uri, body.as_ref(), &headers).await;
            assert_eq!(r.status, status, "{what} with {who}: {}", r.text);
            assert!(r.error().len() > 5, "{what} with {who}: {}", r.text);
            assert!(
                r.headers.get("www-authenticate").is_some(),
                "{what} with {who}: no WWW-Authenticate"
            );
            if status == StatusCode::FORBIDDEN {
                assert!(r.error().contains(scope.name()), "{}", r.error());
            }
            no_customer(&r, &format!("{what} with {who}"));
            assert_eq!(fingerprint(&t).await, before, "{what} with {who} wrote");
            rows += 1;
        }
        let r = t
            .call_bare(
                &m,
                &uri,
                body.as_ref(),
                &[("authorization", &bearer(&right[scope]))],
            )
            .await;
        assert!(
            r.status.is_success(),
            "{what} with {scope}: {} {}",
            r.status,
            r.text
        );
        // Personal data only where the scope is about it.
        if *scope != Scope::CustomersWrite {
            no_customer(&r, &what);
        }
        rows += 1;
    }
    println!(
        "authorization matrix: {} operations x 6 = {rows} requests in {:.1} s",
        secured.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(rows, secured.len() * 6);
    let m = t.state.guard.metrics();
    assert_eq!(m.get(Reason::Forbidden), secured.len() as u64);
    assert!(m.get(Reason::Revoked) >= secured.len() as u64);
}

/// `req` from the address `peer`, as the server sees a connection.
async fn from(t: &TestApp, peer: &str, key: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder()
        .uri("/stores")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
    let resp = t.app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_burst_of_wrong_keys_is_limited_per_client() {
    let t = TestApp::with_limit(
        "auth_limit",
        LimitConfig {
            burst: 5,
            per_second: 1.0,
        },
    )
    .await;
    t.fixtures().await;
    let before = fingerprint(&t).await;
    let attacker = "203.0.113.7:40000";
    let mut statuses = Vec::new();
    for i in 0..20 {
        let wrong = NewKey::generate().text;
        let (status, headers, body) = from(&t, attacker, &wrong).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&wait), "Retry-After {wait}");
            assert!(
                body["error"].as_str().unwrap().contains("retry in"),
                "{body}"
            );
        }
        statuses.push(status.as_u16());
        // A valid key from the same address is served in the middle of the burst.
        if i == 10 {
            let (status, _, _) = from(&t, attacker, &t.admin_key).await;
            assert_eq!(status, StatusCode::OK, "a valid key was locked out");
        }
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(statuses[5..], [429; 15], "{statuses:?}");
    // Another client is untouched.
    let (status, _, _) = from(&t, "198.51.100.2:40000", &NewKey::generate().text).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let m = t.state.guard.metrics();
    assert_eq!(m.get(Reason::RateLimited), 15);
    assert_eq!(m.get(Reason::Invalid), 6);
    // A token back after a second: 401 again, then limited again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        from(&t, attacker, "brw_x").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        from(&t, attacker, "brw_x").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(fingerprint(&t).await, before, "the burst wrote");
    // Counted in /metrics, by reason.
    let metrics = t.call("GET", "/metrics", None).await.text;
    assert!(
        metrics.contains("brewlytics_auth_failures_total{reason=\"rate_limited\"} 16"),
        "{metrics}"
    );
}

/// The probability that a draw of `a` is below a draw of `b` (Mann–Whitney's U over |a||b|).
fn prob_below(a: &[f64], b: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|x| (*x, true))
        .chain(b.iter().map(|x| (*x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut seen_b, mut below) = (0f64, 0f64);
    for (_, is_a) in all.iter().rev() {
        if *is_a {
            below += seen_b;
        } else {
            seen_b += 1.0;
        }
    }
    below / (a.len() as f64 * b.len() as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test]
async fn a_wrong_secret_takes_as_long_as_an_unknown_key() {
    let t = TestApp::new("auth_timing").await;
    let store = t.state.guard.store().unwrap().clone();
    let known = PresentedKey::parse(&t.admin_key).unwrap();
    let id = known.id.to_string();
    // Interleaved, so drift of the machine's speed falls on both alike.
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..6000 {
        let fresh = NewKey::generate().text;
        let (text, into) = if i % 2 == 0 {
            // The known id with another secret.
            (format!("brw_{id}_{}", &fresh[21..]), &mut wrong)
        } else {
            (fresh, &mut unknown)
        };
        let key = PresentedKey::parse(&text).unwrap();
        let started = Instant::now();
        let outcome = store.verify(&key).await.unwrap();
        let took = started.elapsed().as_secs_f64() * 1e6;
        assert!(outcome.is_err());
        if i >= 1000 {
            into.push(took);
        }
    }
    let p = prob_below(&wrong, &unknown);
    let (mw, mu) = (median(&mut wrong), median(&mut unknown));
    println!("verify: wrong secret median {mw:.2} µs, unknown key {mu:.2} µs, P(wrong < unknown) = {p:.3}");
    assert!(
        (0.3..=0.7).contains(&p),
        "the two are told apart: P = {p:.3}"
    );
    assert!(
        (mw - mu).abs() <= 0.25 * mw.max(mu),
        "medians {mw:.2} / {mu:.2} µs"
    );
}

#[tokio::test]
async fn keys_never_reach_the_logs_or_the_metrics() {
    let log = common::log::captured("trace");
    let t = TestApp::new("auth_secrets").await;
    t.fixtures().await;
    let key = t.key("marker", &[Scope::OrdersRead]).await;
    let secret = &key[21..];
    let wrong = format!("{}{}", &key[..21], &NewKey::generate().text[21..]);
    for auth in [
        format!("Bearer {key}"),
        format!("Bearer {wrong}"),
        format!("Bearer {key}x"),
        format!("Basic {key}"),
    ] {
        for path in [
            "/stores",
            "/orders/00000000-0000-0000-0000-000000000000",
            "/metrics",
        ] {
            t.call_with("GET", path, &[("authorization", &auth)]).await;
        }
    }
    t.state
        .guard
        .store()
        .unwrap()
        .flush_last_used()
        .await
        .unwrap();
    let metrics = t.call("GET", "/metrics", None).await.text;
    let text = log.text();
    assert!(
        text.contains("authentication refused"),
        "nothing logged:\n{text}"
    );
    for (what, haystack) in [("the log", &text), ("/metrics", &metrics)] {
        for needle in [secret, &wrong[21..], &t.admin_key[21..]] {
            assert!(!haystack.contains(needle), "a key's secret is in {what}");
        }
    }
    // The key was used, and its last use written (not the key).
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select last_used_at from auth.api_keys where name = 'marker'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert!(used.is_some(), "last_used_at not written");
}

#[tokio::test]
async fn a_key_made_a_moment_ago_is_accepted_before_its_notification() {
    use brewlytics_support::auth::store::UNKNOWN_RELOAD_EVERY;
    use brewlytics_support::auth::{admin, KeyStore, Scopes};
    let t = TestApp::new("auth_fresh_key").await;
    // A store made outside the runtime listens for no notification: only its own reloads
    // show it a new key (what a server sees while the notification is still on the way).
    let pool = t.pool.clone();
    let store = std::thread::spawn(move || KeyStore::new(pool))
        .join()
        .unwrap();
    assert!(store.any_active().await.unwrap(), "the copy is loaded");
    tokio::time::sleep(UNKNOWN_RELOAD_EVERY).await;
    let made = admin::create(&t.pool, "fresh", &Scopes::new([Scope::ReportsRead]))
        .await
        .unwrap();
    let fresh = PresentedKey::parse(&made.text).unwrap();
    let principal = store.verify(&fresh).await.unwrap();
    assert_eq!(principal.map(|p| p.name).ok().as_deref(), Some("fresh"));
    // Refused keys reload at most once per interval: a second new key waits for the next.
    let second = admin::create(&t.pool, "second", &Scopes::new([Scope::ReportsRead]))
        .await
        .unwrap();
    let second = PresentedKey::parse(&second.text).unwrap();
    assert!(store.verify(&second).await.unwrap().is_err());
    tokio::time::sleep(UNKNOWN_RELOAD_EVERY).await;
    assert!(store.verify(&second).await.unwrap().is_ok());
}
