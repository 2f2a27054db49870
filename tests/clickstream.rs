//! Clickstream end to end: impressions and clicks in, click-to-order attribution out, against
//! real PostgreSQL (and NATS JetStream for the events stream).
//!
//! The attribution in OLAP is compared with a brute-force computation over the source's own
//! rows (the last click on the line's product in the order's session no more than the window
//! before the order), after events and orders arrived in shuffled order — clicks after the
//! orders they explain, sessions across midnight — and after events were delivered again.

mod harness;

use std::time::Duration;

use harness::sql::{exec, rows};
use harness::{free_addr, http, wait_for, wait_streaming, Clusters, Proc};
use sqlx::PgConnection;

/// The attribution the source's rows call for, computed row by row (no window functions, no
/// OLAP): `order_item_id|click id|minutes to convert`.
const REFERENCE: &str = "
    select i.id as order_item_id, c.id as click, round((extract(epoch from o.ordered_at
           - c.occurred_at) / 60)::numeric, 2) as minutes
    from orders o
    join order_items i on i.order_id = o.id
    join click_events c on c.id = (
        select k.id from click_events k
        where k.kind = 'click' and k.session_id = o.session_id and k.product_id = i.product_id
          and k.occurred_at between o.ordered_at - interval '30 minutes' and o.ordered_at
        order by k.occurred_at desc, k.id desc limit 1)
    where o.session_id is not null";

const ATTRIBUTED: &str =
    "select order_item_id, click_event_id as click, minutes_to_convert as minutes
     from fact_attribution";

/// Impressions and clicks per product and day, from the source's rows.
const COUNTS_REFERENCE: &str = "
    select (occurred_at at time zone 'UTC')::date as day, product_id,
           count(*) filter (where kind = 'impression') as impressions,
           count(*) filter (where kind = 'click') as clicks
    from click_events group by 1, 2";

const COUNTS: &str = "select date, product_id, impressions, clicks from clickstream_daily
                      where impressions + clicks > 0";

/// A small deterministic generator (the test needs no randomness crate).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Statements writing a browsing day into OLTP: each one a source transaction, in shuffled
/// order (so clicks often arrive after their orders). Sessions start around midnight UTC of
/// the day before yesterday, so many cross it.
fn browsing(seed: u64, products: &[i64], employee: i64, store: i64) -> Vec<String> {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    let mut event = 0u64;
    for s in 0..40u64 {
        let session = format!("s{seed}-{s}");
        let start = rng.next(120) as i64 - 60; // minutes from midnight
        let mut clicks = Vec::new();
        let mut events = Vec::new();
        for _ in 0..(3 + rng.next(8)) {
            let product = products[rng.next(products.len() as u64) as usize];
            let minute = start + rng.next(90) as i64;
            let second = rng.next(60);
            let kind = if rng.next(3) == 0 {
                "click"
            } else {
                "impression"
            };
            event += 1;
            let id = format!("00000000-0000-7000-8000-{:04x}{:08x}", seed, event);
            let at = format!(
                "(current_date - 2)::timestamptz + interval '{minute} minutes {second} seconds'"
            );
            if kind == "click" {
                clicks.push((product, minute));
            }
            events.push(format!(
                "insert into click_events values ('{id}', '{kind}', '{session}', null, {product},
                 {at}, now(), '{{\"page\": \"menu\"}}');"
            ));
        }
        // Orders: for some clicked products, between 0 and 40 minutes later (some beyond the
        // window), sometimes two in one session; some orders buy what was not clicked.
        let mut orders = Vec::new();
        for n in 0..rng.next(3) {
            let (product, minute) = clicks
                .get(rng.next(clicks.len().max(1) as u64) as usize)
                .copied()
                .unwrap_or((products[0], start));
            let other = products[rng.next(products.len() as u64) as usize];
            let at = minute + rng.next(41) as i64;
            let order = format!("00000000-0000-7000-9000-{:04x}{:04x}{:04x}", seed, s, n);
            orders.push(format!(
                "insert into orders (id, employee_id, store_id, payment_method, ordered_at, total,
                                     session_id)
                 values ('{order}', {employee}, {store}, 'card',
                         (current_date - 2)::timestamptz + interval '{at} minutes 30 seconds',
                         7.60, '{session}');
                 insert into order_items (order_id, product_id, quantity, unit_price)
                 values ('{order}', {product}, 2, 3.80), ('{order}', {other}, 1, 2.50);"
            ));
        }
        out.extend(events);
        out.extend(orders);
    }
    // Shuffle, then group into transactions of 1 to 4 statements.
    for i in (1..out.len()).rev() {
        let j = rng.next(i as u64 + 1) as usize;
        out.swap(i, j);
    }
    let mut txs = Vec::new();
    while !out.is_empty() {
        let n = (1 + rng.next(4) as usize).min(out.len());
        let part: Vec<String> = out.drain(..n).collect();
        txs.push(format!("begin; {} commit;", part.join("\n")));
    }
    txs
}

async fn ids(c: &mut PgConnection, sql: &str) -> Vec<i64> {
    sqlx::query_scalar(sql).fetch_all(c).await.unwrap()
}

/// Waits until OLAP's attribution and counts equal the reference over OLTP.
async fn attribution_converges(c: &Clusters, r: &mut Proc) -> usize {
    let mut oltp = c.oltp_conn().await;
    let mut olap = c.olap_conn().await;
    let want = rows(&mut oltp, REFERENCE).await.unwrap();
    let counts = rows(&mut oltp, COUNTS_REFERENCE).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = rows(&mut olap, ATTRIBUTED).await.unwrap();
        let got_counts = rows(&mut olap, COUNTS).await.unwrap();
        if got == want && got_counts == counts {
            return want.len();
        }
        if let Some(status) = r.exited() {
            panic!("the replicator exited ({status}): {}", r.log_text());
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
            let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
            panic!(
                "attribution differs from the reference: missing {missing:?}, extra {extra:?}; \
                 counts equal: {}",
                got_counts == counts
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_equals_a_brute_force_reference_in_any_arrival_order() {
    let c = Clusters::start();
    c.prepare(0);
    let listen = free_addr();
    let mut r = c.replicator("clickstream", &listen, &[]);
    wait_streaming(&listen, &r).await;

    let mut oltp = c.oltp_conn().await;
    let products = ids(&mut oltp, "select id from products order by id limit 5").await;
    let employee = ids(
        &mut oltp,
        "select id from employees where active order by id limit 1",
    )
    .await[0];
    let store = ids(&mut oltp, "select id from stores order by id limit 1").await[0];
    for tx in browsing(1, &products, employee, store) {
        exec(&mut oltp, &tx).await;
    }
    let attributed = attribution_converges(&c, &mut r).await;
    let mut olap = c.olap_conn().await;
    let crossing: i64 = sqlx::query_scalar(
        "select count(*) from fact_attribution
         where (clicked_at at time zone 'UTC')::date <> (ordered_at at time zone 'UTC')::date",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert!(
        attributed > 20,
        "too few attributed lines to mean much: {attributed}"
    );
    assert!(crossing > 0, "no attribution crosses midnight");
    let unattributed: i64 = sqlx::query_scalar(
        "select count(*) from order_items i join orders o on o.id = i.order_id
         where o.session_id is not null",
    )
    .fetch_one(&mut oltp)
    .await
    .unwrap();
    assert!(
        (unattributed as usize) > attributed,
        "every line attributed: the window and the product are not tested"
    );

    // Delivered again (as a loader would after a crash): nothing changes.
    let before = rows(&mut olap, "select * from fact_clicks").await.unwrap();
    let before_i = rows(&mut olap, "select count(*) from fact_impressions")
        .await
        .unwrap();
    let added: i32 = sqlx::query_scalar(
        "select clickstream_ingest((select jsonb_agg(to_jsonb(e)) from (
             select event_id as id, 'click' as kind, session_id, customer_id, product_id,
                    occurred_at, received_at, context from fact_clicks
             union all
             select event_id, 'impression', session_id, customer_id, product_id,
                    occurred_at, received_at, context from fact_impressions) e))",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(added, 0);
    assert_eq!(
        rows(&mut olap, "select * from fact_clicks").await.unwrap(),
        before
    );
    assert_eq!(
        rows(&mut olap, "select count(*) from fact_impressions")
            .await
            .unwrap(),
        before_i
    );

    // A second day of browsing, late clicks included, then orders changed and deleted, and
    // the source's click_events pruned (the facts keep them).
    for tx in browsing(2, &products, employee, store) {
        exec(&mut oltp, &tx).await;
    }
    exec(
        &mut oltp,
        "update orders set ordered_at = ordered_at + interval '7 minutes'
         where id in (select id from orders where session_id is not null order by id limit 5);
         delete from orders where id in (select id from orders where session_id is not null
                                         order by id desc limit 3);
         update orders set session_id = null
         where id in (select id from orders where session_id is not null
                      order by id limit 4 offset 5);",
    )
    .await;
    attribution_converges(&c, &mut r).await;
    // Orders without a session gain one (another session than they left: its clicks now
    // explain them, or not).
    exec(
        &mut oltp,
        "update orders set session_id = 's2-1'
         where id in (select id from orders where session_id is null order by id limit 3)",
    )
    .await;
    attribution_converges(&c, &mut r).await;

    // A rebuild from the replica gives the same facts.
    let facts = rows(&mut olap, ATTRIBUTED).await.unwrap();
    exec(&mut olap, "select clickstream_rebuild()").await;
    assert_eq!(rows(&mut olap, ATTRIBUTED).await.unwrap(), facts);
    r.terminate(Duration::from_secs(20));
}

/// `brewlytics api` on the embedded path: events and an order with a session through HTTP, the
/// attributed line in OLAP; bad events are refused and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_the_api_reach_the_facts() {
    let c = Clusters::start();
    c.prepare(0);
    let listen = free_addr();
    let mut r = c.replicator("clickstream-api", &listen, &[]);
    wait_streaming(&listen, &r).await;
    // Made before the API starts (which then loads it).
    let shop_key = c.api_key("web-shop", "events:write");
    let api_addr = free_addr();
    let mut api = {
        let log = harness::scratch_dir("logs").join("clickstream-api.log");
        let mut cmd = c.command(&["api"]);
        cmd.env("API_LISTEN", &api_addr);
        Proc::spawn(cmd, log)
    };
    wait_for(Duration::from_secs(30), "the API", &mut [&mut api], || {
        http(&api_addr, "GET", "/health", None).filter(|(s, _)| *s == 200)
    });
    // A web shop's key may send events, and nothing else.
    let (status, _) = http(&api_addr, "POST", "/events", Some("{}")).unwrap();
    assert_eq!(status, 401, "events without a key");
    harness::remember_key(&api_addr, &shop_key);
    let (status, body) = http(&api_addr, "POST", "/orders", Some("{}")).unwrap();
    assert_eq!(status, 403, "an events:write key placed an order: {body}");
    let now = chrono::Utc::now();
    let at = |min: i64| (now - chrono::Duration::minutes(min)).to_rfc3339();
    let batch = format!(
        r#"[{{"kind": "impression", "session_id": "web-1", "product_id": 1, "occurred_at": "{}"}},
            {{"kind": "click", "session_id": "web-1", "product_id": 1, "occurred_at": "{}",
              "customer_id": 1, "context": {{"page": "menu", "position": 2}}}}]"#,
        at(12),
        at(10)
    );
    let (status, body) = http(&api_addr, "POST", "/events", Some(&batch)).unwrap();
    assert_eq!(status, 202, "{body}");
    let accepted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(accepted["accepted"], 2);
    let click_id = accepted["ids"][1].as_str().unwrap().to_owned();

    // Refused, all of it: nothing more in click_events.
    for bad in [
        "{".to_owned(),
        r#"{"kind": "view", "session_id": "a", "product_id": 1, "occurred_at": "2026-01-01T00:00:00Z"}"#.to_owned(),
        format!(r#"[{{"kind": "click", "session_id": "a", "product_id": 1, "occurred_at": "{}"}},
                    {{"kind": "click", "session_id": "bad id", "product_id": 1, "occurred_at": "{}"}}]"#, at(1), at(1)),
        format!(r#"{{"kind": "click", "session_id": "a", "product_id": 1, "occurred_at": "{}"}}"#,
                (now + chrono::Duration::hours(1)).to_rfc3339()),
        format!(r#"{{"kind": "click", "session_id": "a", "product_id": 1, "occurred_at": "{}"}}"#,
                (now - chrono::Duration::hours(25)).to_rfc3339()),
        "[]".to_owned(),
    ] {
        let (status, body) = http(&api_addr, "POST", "/events", Some(&bad)).unwrap();
        assert!((400..500).contains(&status), "{bad} -> {status} {body}");
        assert!(body.starts_with("{\"error\":"), "{body}");
    }
    let mut oltp = c.oltp_conn().await;
    let stored: i64 = sqlx::query_scalar("select count(*) from click_events")
        .fetch_one(&mut oltp)
        .await
        .unwrap();
    assert_eq!(stored, 2, "a refused request wrote events");

    harness::remember_key(&api_addr, &harness::test_key().text);
    let order = r#"{"customer_id": 1, "employee_id": 1, "store_id": 1, "payment_method": "card",
                    "session_id": "web-1", "items": [{"product_id": 1, "quantity": 2}]}"#;
    let (status, body) = http(&api_addr, "POST", "/orders", Some(order)).unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"session_id\":\"web-1\""), "{body}");

    let mut olap = c.olap_conn().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let row: (String, String) = loop {
        let found = sqlx::query_as(
            "select click_event_id::text, minutes_to_convert::text from fact_attribution",
        )
        .fetch_optional(&mut olap)
        .await
        .unwrap();
        if let Some(row) = found {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attribution: {}",
            r.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row.0, click_id);
    let minutes: f64 = row.1.parse().unwrap();
    assert!((9.5..11.0).contains(&minutes), "{minutes}");
    api.terminate(Duration::from_secs(10));
    r.terminate(Duration::from_secs(20));
}

/// `brewlytics load --from nats --nats-url …` (the events loader beside the change stream's).
fn loader(c: &Clusters, nats: &str, listen: &str, name: &str) -> Proc {
    let log = harness::scratch_dir("logs").join(format!("{name}.log"));
    let mut cmd = c.command(&[
        "load",
        "--from",
        "nats",
        "--nats-url",
        nats,
        "--olap-url",
        c.olap_url().expose(),
        "--listen",
        listen,
        "--batch-max-changes",
        "50",
    ]);
    cmd.env("RUST_LOG", "info");
    Proc::spawn(cmd, log)
}

/// With `--nats-url`: events published to JetStream (OLTP untouched), loaded by `brewlytics
/// load` killed -9 twice while they flow, malformed messages and a re-published event on the
/// stream; every accepted event is in the facts exactly once, the malformed ones are dead
/// letters, and attribution equals the brute-force reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_nats_load_exactly_once_across_loader_kills() {
    let nats = harness::nats::NatsCluster::start(1);
    let url = nats.url();
    let c = Clusters::start();
    c.prepare(0);
    let listen = free_addr();
    let mut r = c.replicator("clickstream-nats", &listen, &[]);
    wait_streaming(&listen, &r).await;
    let api_addr = free_addr();
    let mut api = {
        let log = harness::scratch_dir("logs").join("clickstream-nats-api.log");
        let mut cmd = c.command(&["api"]);
        cmd.env("API_LISTEN", &api_addr).env("NATS_URL", &url);
        Proc::spawn(cmd, log)
    };
    wait_for(Duration::from_secs(30), "the API", &mut [&mut api], || {
        http(&api_addr, "GET", "/health", None).filter(|(s, _)| *s == 200)
    });
    harness::remember_key(&api_addr, &harness::test_key().text);
    let loader_addr = free_addr();
    harness::remember_key(&loader_addr, &harness::test_key().text);
    let mut load = loader(&c, &url, &loader_addr, "events-loader-1");

    let mut accepted: Vec<String> = Vec::new();
    let mut orders = 0;
    for round in 0..30 {
        let now = chrono::Utc::now();
        let session = format!("n-{round}");
        let events: Vec<String> = (0..20)
            .map(|i| {
                let kind = if i % 4 == 0 { "click" } else { "impression" };
                let at = (now - chrono::Duration::seconds(60 - i)).to_rfc3339();
                format!(
                    r#"{{"kind": "{kind}", "session_id": "{session}", "product_id": {},
                        "occurred_at": "{at}"}}"#,
                    1 + (i % 3)
                )
            })
            .collect();
        let (status, body) = http(
            &api_addr,
            "POST",
            "/events",
            Some(&format!("[{}]", events.join(","))),
        )
        .unwrap();
        assert_eq!(status, 202, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        accepted.extend(
            v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_owned()),
        );
        if round % 3 == 0 {
            let order = format!(
                r#"{{"employee_id": 1, "store_id": 1, "payment_method": "card",
                    "session_id": "{session}",
                    "items": [{{"product_id": 1, "quantity": 1}}, {{"product_id": 2, "quantity": 1}}]}}"#
            );
            let (status, body) = http(&api_addr, "POST", "/orders", Some(&order)).unwrap();
            assert_eq!(status, 201, "{body}");
            orders += 1;
        }
        if round == 10 || round == 20 {
            load.kill9();
            load = loader(&c, &url, &loader_addr, &format!("events-loader-{round}"));
        }
    }
    assert!(orders > 5);

    // Malformed messages, and one event published a second time under another message id.
    let client = async_nats::connect(url.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("BREWLYTICS_EVENTS").await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    for payload in [
        b"{not json".to_vec(),
        br#"{"id": "x", "kind": "click"}"#.to_vec(),
        first.payload.to_vec(),
    ] {
        js.publish("brewlytics_events.click", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut olap = c.olap_conn().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (loaded, dead): (i64, i64) = sqlx::query_as(
            "select (select count(*) from fact_clicks) + (select count(*) from fact_impressions),
                    (select count(*) from clickstream_dead_letters)",
        )
        .fetch_one(&mut olap)
        .await
        .unwrap();
        if loaded == accepted.len() as i64 && dead == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loaded {loaded} of {} events, {dead} dead letters: {}",
            accepted.len(),
            load.log_text()
        );
        load.assert_running();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids: Vec<String> = sqlx::query_scalar(
        "select event_id::text from fact_clicks union all
         select event_id::text from fact_impressions order by 1",
    )
    .fetch_all(&mut olap)
    .await
    .unwrap();
    accepted.sort();
    assert_eq!(ids, accepted, "not every accepted event exactly once");
    let reasons: Vec<String> =
        sqlx::query_scalar("select reason from clickstream_dead_letters order by id")
            .fetch_all(&mut olap)
            .await
            .unwrap();
    assert!(reasons.iter().all(|r| r.starts_with("not ")), "{reasons:?}");
    let oltp_events: i64 = sqlx::query_scalar("select count(*) from click_events")
        .fetch_one(&mut c.oltp_conn().await)
        .await
        .unwrap();
    assert_eq!(oltp_events, 0, "events with NATS touched OLTP");

    // Attribution over the loaded clicks and the replicated orders, against brute force.
    let reference = "
        select i.id, c.event_id, round((extract(epoch from o.ordered_at - c.occurred_at)
               / 60)::numeric, 2)
        from replica.orders o
        join replica.order_items i on i.order_id = o.id
        join fact_clicks c on c.event_id = (
            select k.event_id from fact_clicks k
            where k.session_id = o.session_id and k.product_id = i.product_id
              and k.occurred_at between o.ordered_at - interval '30 minutes' and o.ordered_at
            order by k.occurred_at desc, k.event_id desc limit 1)";
    let attributed =
        "select order_item_id, click_event_id, minutes_to_convert from fact_attribution";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let want = rows(&mut olap, reference).await.unwrap();
        let got = rows(&mut olap, attributed).await.unwrap();
        if want == got && want.len() >= orders {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "attribution {got:?} differs from the reference {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Consumer lag in the loader's metrics and status.
    // (read from JetStream every second: the gauge follows within a few)
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = harness::http_get(&loader_addr, "/metrics").await.unwrap();
        let pending = harness::metric(&metrics, "brewlytics_events_loader_pending_messages");
        if pending == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events loader lag {pending:?}: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, status) = harness::http_get(&loader_addr, "/status").await.unwrap();
    assert!(status.contains("\"events_loader\""), "{status}");
    let positions = c.run(&["status", "--json"]);
    assert!(positions.contains("BREWLYTICS_EVENTS"), "{positions}");
    load.terminate(Duration::from_secs(20));
    api.terminate(Duration::from_secs(10));
    r.terminate(Duration::from_secs(20));
}

/// `brewlytics up` without NATS (the embedded path): `loadtest --mix browse` sends visits —
/// impressions, clicks, orders in their sessions — through `POST /events` and the OLTP table
/// `click_events`; the funnel report then counts them and attributes orders to clicks.
#[test]
fn up_carries_browsing_end_to_end() {
    let scratch = harness::Scratch::new("clickstream-up");
    let data = scratch.join("data");
    let mut up = harness::up::command(&data);
    up.args(["--seed-orders", "0"]);
    let mut up = Proc::spawn(up, scratch.join("up.log")).gentle();
    let api = harness::up::wait(&mut up).api;
    let bin = env!("CARGO_BIN_EXE_brewlytics");
    let out = std::process::Command::new(bin)
        .args(["loadtest", "--data-dir"])
        .arg(&data)
        .args(["--api", &format!("http://{api}")])
        .args([
            "--mix",
            "browse",
            "--duration",
            "4s",
            "--rate",
            "15",
            "--json",
        ])
        .args(["--seed", "7", "--no-freshness"])
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running brewlytics loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadtest failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report:#}");
    let visits = report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "POST /events")
        .expect("events were sent")["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(visits, 60, "{report:#}");

    // Every visit shows 3 to 8 products: the funnel counts them all, and some orders.
    let funnel = || funnel_counts(&data);
    let (impressions, clicks, orders) = wait_for(
        Duration::from_secs(60),
        "the browsing in the funnel",
        &mut [&mut up],
        || {
            let f = funnel();
            (f.0 >= 3 * visits && f.1 > 0 && f.2 > 0).then_some(f)
        },
    );
    assert!(
        impressions <= 8 * visits,
        "{impressions} impressions of {visits} visits"
    );
    assert!(
        clicks <= 3 * visits && orders <= clicks,
        "{clicks} clicks, {orders} orders"
    );
    up.terminate(Duration::from_secs(30));
}

/// The `clickstream-funnel` report of the `up` in `data`: (impressions, clicks, orders).
fn funnel_counts(data: &std::path::Path) -> (u64, u64, u64) {
    let bin = env!("CARGO_BIN_EXE_brewlytics");
    let out = std::process::Command::new(bin)
        .args([
            "report",
            "clickstream-funnel",
            "--format",
            "csv",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = |stage: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.split(',')
                    .nth(1)
                    .filter(|s| *s == stage)
                    .and(l.split(',').nth(2))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (count("impressions"), count("clicks"), count("orders"))
}

/// `brewlytics up --nats-url`: events go through JetStream and the loader `up` runs beside
/// the replicator, whose `/metrics` carries the loader's series.
#[test]
fn up_with_nats_loads_events_and_shows_their_loader() {
    let nats = harness::nats::NatsCluster::start(1);
    let scratch = harness::Scratch::new("clickstream-up-nats");
    let data = scratch.join("data");
    let mut up = harness::up::command(&data);
    up.args(["--seed-orders", "0", "--nats-url", &nats.url()]);
    let mut up = Proc::spawn(up, scratch.join("up.log")).gentle();
    let addrs = harness::up::wait(&mut up);
    let now = chrono::Utc::now().to_rfc3339();
    let events = format!(
        r#"[{{"kind": "impression", "session_id": "up-nats", "product_id": 1, "occurred_at": "{now}"}},
            {{"kind": "click", "session_id": "up-nats", "product_id": 1, "occurred_at": "{now}"}}]"#
    );
    let (status, body) = http(&addrs.api, "POST", "/events", Some(&events)).unwrap();
    assert_eq!(status, 202, "{body}");
    let applied = |metrics: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with("brewlytics_events_loader_applied_messages"))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
    };
    let loaded = wait_for(
        Duration::from_secs(60),
        "the events loader's series on the replicator's /metrics",
        &mut [&mut up],
        || {
            let (_, metrics) = http(&addrs.replicator, "GET", "/metrics", None)?;
            applied(&metrics).filter(|n| *n >= 2.0)
        },
    );
    assert_eq!(loaded, 2.0);
    let (impressions, clicks, _) = wait_for(
        Duration::from_secs(30),
        "the events in the funnel",
        &mut [&mut up],
        || Some(funnel_counts(&data)).filter(|f| f.1 > 0),
    );
    assert_eq!((impressions, clicks), (1, 1));
    up.terminate(Duration::from_secs(30));
}
