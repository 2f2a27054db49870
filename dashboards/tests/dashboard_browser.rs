//! The built-in dashboard in real headless Chromium: for the known orders of
//! `common::FIXTURE` (plus two of today) the rendered page shows the expected figures, under
//! its Content-Security-Policy (a violation reported on the console fails the test) and with
//! its periodic refresh running. A screenshot is saved as
//! `$CARGO_TARGET_TMPDIR/dashboard.png`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use brewlytics_support::browser::{self, BrowserOptions};
use brewlytics_support::web::PAGE_POLICY;
use common::{load_fixture, olap};

/// Today's orders: one completed (2 × 3.50 + 2.50 = 9.50) and one cancelled (5.00).
const TODAY: &str = "
insert into fact_sales (order_item_id, order_id, date_key, customer_key, product_key, employee_key,
                        store_key, quantity, unit_price, revenue, status, payment_method, ordered_at, hour_of_day)
select i.item, i.ord::uuid, dim_date_key((now() at time zone 'UTC')::date), 1, i.prod, 1, 1, i.qty, i.price,
       i.qty * i.price, i.status, 'card', now(), extract(hour from now() at time zone 'UTC')
from (values
    (901, '00000000-0000-0000-0000-000000000901', 102, 2, 3.50, 'completed'),
    (902, '00000000-0000-0000-0000-000000000901', 111, 1, 2.50, 'completed'),
    (903, '00000000-0000-0000-0000-000000000902', 111, 2, 2.50, 'cancelled')
) as i(item, ord, prod, qty, price, status);
";

/// The text of the element with `id` (up to its first closing tag) and its data-value.
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let end = dom[start..].find("</").unwrap() + start;
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_known_figures() {
    let (_db, pool) = olap("dashboard_browser").await;
    load_fixture(&pool).await;
    sqlx::raw_sql(TODAY).execute(&pool).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The dashboard's router, counting the page's polls of /api/summary.
    let polls = Arc::new(AtomicUsize::new(0));
    let app = {
        let polls = polls.clone();
        brewlytics_dashboards::web::router(pool.clone()).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                if req.uri().path() == "/api/summary" {
                    polls.fetch_add(1, Ordering::Relaxed);
                }
                next.run(req)
            },
        ))
    };
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    // Every answer carries the security headers: the page, its assets, JSON, a 404.
    for path in [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/api/summary?from=2024-05-01",
        "/nope",
    ] {
        let res = reqwest::get(format!("{base}{path}")).await.unwrap();
        let h = res.headers();
        assert_eq!(h["content-security-policy"], PAGE_POLICY, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
    }

    // The JSON endpoint refuses a bad date with a JSON error.
    let res = reqwest::get(format!("{base}/api/summary?from=2024-02-30"))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("2024-02-30"));

    let page = format!("{base}/?from=2024-05-01&to=2024-05-03");
    let options = BrowserOptions {
        timeout: Duration::from_secs(90),
        // Room for the first load and at least one 5-second refresh.
        virtual_time_budget_ms: 12_000,
        ..BrowserOptions::default()
    };
    let polls_before = polls.load(Ordering::Relaxed);
    let rendered = {
        let (page, options) = (page.clone(), options.clone());
        tokio::task::spawn_blocking(move || browser::render(&page, &options))
            .await
            .unwrap()
            .unwrap()
    };
    assert!(
        rendered.csp_violations().is_empty(),
        "the page broke its Content-Security-Policy: {:#?}",
        rendered.console
    );
    let polled = polls.load(Ordering::Relaxed) - polls_before;
    assert!(
        polled >= 2,
        "the page polled /api/summary {polled} times: no refresh"
    );
    let dom = rendered.dom;

    // Headline figures: the range holds 5 revenue orders (order 3 was cancelled) for 32.50.
    assert!(
        element(&dom, "kpi-revenue").ends_with("data-value=\"32.50\">32.50"),
        "{}",
        element(&dom, "kpi-revenue")
    );
    assert!(element(&dom, "kpi-orders").ends_with(">5"));
    assert!(element(&dom, "kpi-aov").ends_with(">6.50"));
    assert!(element(&dom, "kpi-open-orders").ends_with(">2"));
    // Today: 9.50, the cancelled 5.00 left out.
    assert!(
        element(&dom, "kpi-today-revenue").ends_with("data-value=\"9.50\">9.50"),
        "{}",
        element(&dom, "kpi-today-revenue")
    );

    // Charts: one bar per day, per hour, per product (SCD2 versions together).
    for bar in [
        "data-label=\"2024-05-01\" data-value=\"10.50\"",
        "data-label=\"2024-05-02\" data-value=\"8.50\"",
        "data-label=\"2024-05-03\" data-value=\"13.50\"",
        "data-label=\"8\" data-value=\"17.00\"",
        "data-label=\"Caffè latte\" data-value=\"16.50\"",
        "data-label=\"coffee\" data-value=\"16.50\"",
        "data-label=\"card\" data-value=\"15.50\"",
    ] {
        assert!(dom.contains(bar), "missing {bar}");
    }
    assert!(
        !dom.contains("data-label=\"Latte\""),
        "versions must not be split"
    );
    // The menu funnel: 7 impressions, 3 clicks, 1 attributed order in the range.
    let funnel = &dom[dom.find("id=\"clickstream-funnel\"").expect("no funnel")..];
    for bar in [
        "data-label=\"impressions\" data-value=\"7\"",
        "data-label=\"clicks\" data-value=\"3\"",
        "data-label=\"orders\" data-value=\"1\"",
    ] {
        assert!(funnel.contains(bar), "the funnel misses {bar}");
    }
    assert!(dom.contains("<td data-column=\"conversion_rate\">"));
    // Tables.
    assert!(dom.contains("<td data-column=\"store\">Downtown</td>"));
    assert!(dom.contains("<td data-column=\"employee\">Ana</td>"));
    assert!(dom.contains("<td data-column=\"product\">Caffè latte</td>"));
    // The filter shows the range; the status line says it refreshed.
    assert!(dom.contains("updated "), "no refresh status");

    // New data shows on the next refresh (a second load reads the same endpoint).
    sqlx::query(
        "update fact_sales set status = 'completed' where order_id = '00000000-0000-0000-0000-000000000902'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let dom = {
        let (page, options, shot) = (page.clone(), options.clone(), shot.clone());
        tokio::task::spawn_blocking(move || {
            browser::screenshot(&page, &shot, &options).unwrap();
            browser::dump_dom(&page, &options)
        })
        .await
        .unwrap()
        .unwrap()
    };
    assert!(
        element(&dom, "kpi-today-revenue").ends_with(">14.50"),
        "{}",
        element(&dom, "kpi-today-revenue")
    );
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 20_000, "screenshot of {size} bytes");

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csp_violation_is_caught() {
    // The control for the check above: an inline script under the same policy is refused by
    // Chromium and reported, so a page that broke its policy would fail the test.
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async {
                axum::response::Html(
                    "<!doctype html><p id=x>static</p>\
                     <script>document.getElementById('x').textContent='ran'</script>",
                )
            }),
        )
        .layer(brewlytics_support::web::security_headers(PAGE_POLICY));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let rendered =
        tokio::task::spawn_blocking(move || browser::render(&url, &BrowserOptions::default()))
            .await
            .unwrap()
            .unwrap();
    server.abort();
    assert!(rendered.dom.contains(">static<"), "{}", rendered.dom);
    let violations = rendered.csp_violations();
    assert_eq!(violations.len(), 1, "{:#?}", rendered.console);
    assert!(violations[0].contains("inline script"), "{}", violations[0]);
}

#[test]
fn a_hung_page_is_killed_at_the_timeout() {
    // A server that accepts and never answers: Chromium waits, the helper kills it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let started = std::time::Instant::now();
    let err = browser::dump_dom(
        &url,
        &BrowserOptions {
            timeout: Duration::from_secs(3),
            virtual_time_budget_ms: 60_000,
            ..BrowserOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, browser::BrowserError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(listener);
}
