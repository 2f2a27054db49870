//! The built-in dashboard in real headless Chromium, behind its login: refused without one
//! (the page sends the browser to the login form, the JSON answers 401 and names no
//! customer), refused with a key lacking `reports:read`, and after signing in with one the
//! page shows the expected figures for the known orders of `common::FIXTURE` (plus two of
//! today), under its Content-Security-Policy (a violation reported on the console fails the
//! test) and with its periodic refresh running. The session cookie is `HttpOnly`,
//! `SameSite=Strict` and out of reach of scripts; signing out, or revoking the key, ends the
//! session. A screenshot is saved as `$CARGO_TARGET_TMPDIR/dashboard.png`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use brewlytics_dashboards::web::access;
use brewlytics_support::auth::{GuardConfig, Scope};
use brewlytics_support::browser::{self, BrowserOptions};
use brewlytics_support::devtools::Page;
use brewlytics_support::testing::TestKeys;
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

/// A client that does not follow redirects, with `key` as its bearer (or none).
fn client(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(k) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {k}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

const SIGNED_IN: Duration = Duration::from_secs(30);

/// Types `key` into the login form and submits it.
fn sign_in(page: &mut Page, key: &str) {
    page.submit("login-form", &[("key", key)], SIGNED_IN)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_a_login_and_then_shows_the_known_figures() {
    let (_db, pool) = olap("dashboard_browser").await;
    load_fixture(&pool).await;
    sqlx::raw_sql(TODAY).execute(&pool).await.unwrap();
    let keys = TestKeys::new("dashboard_browser").await;
    let analyst = keys.key("analyst", &[Scope::ReportsRead]).await;
    let till = keys
        .key("till", &[Scope::OrdersWrite, Scope::CatalogRead])
        .await;
    let guard = keys.guard(GuardConfig {
        limit: TestKeys::GENEROUS,
        ..access::guard_config()
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The dashboard's router, counting the page's polls of /api/summary.
    let polls = Arc::new(AtomicUsize::new(0));
    let app = {
        let polls = polls.clone();
        brewlytics_dashboards::web::router(pool.clone(), guard).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                if req.uri().path() == "/api/summary" {
                    polls.fetch_add(1, Ordering::Relaxed);
                }
                next.run(req)
            },
        ))
    };
    let server = tokio::spawn(brewlytics_support::serve::serve(listener, app, async {
        let _ = stop_rx.await;
    }));

    // Every answer carries the security headers: the page, its assets, JSON, a 404, the
    // refusals and the login form.
    let (anonymous, reader, wrong) = (client(None), client(Some(&analyst)), client(Some(&till)));
    for (who, path) in [
        (&reader, "/"),
        (&reader, "/assets/app.js"),
        (&reader, "/assets/app.css"),
        (&reader, "/api/summary?from=2024-05-01"),
        (&reader, "/nope"),
        (&anonymous, "/"),
        (&anonymous, "/api/summary"),
        (&anonymous, "/login"),
        (&wrong, "/api/summary"),
    ] {
        let res = who.get(format!("{base}{path}")).send().await.unwrap();
        let h = res.headers();
        assert_eq!(h["content-security-policy"], PAGE_POLICY, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
    }

    // Without a key: the page sends the browser to the login form, the data is refused.
    let res = anonymous
        .get(format!("{base}/?from=2024-05-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"],
        "/login?next=%2F%3Ffrom%3D2024-05-01"
    );
    // Customers' names and emails are answered to reports:read only.
    for (who, status) in [(&anonymous, 401), (&wrong, 403), (&reader, 200)] {
        let res = who
            .get(format!("{base}/api/summary?from=2024-05-01&to=2024-05-03"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status);
        let text = res.text().await.unwrap();
        let personal = text.contains("Ada") || text.contains("ada@example.com");
        assert_eq!(personal, status == 200, "{status}: {text}");
        if status != 200 {
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(body["error"].is_string(), "{text}");
        }
    }
    assert_eq!(
        anonymous
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reader
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        403,
        "/metrics needs ops:read"
    );

    // The JSON endpoint refuses a bad date with a JSON error.
    let res = reader
        .get(format!("{base}/api/summary?from=2024-02-30"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("2024-02-30"));

    // In the browser.
    let page_url = format!("{base}/?from=2024-05-01&to=2024-05-03");
    let handle = tokio::runtime::Handle::current();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let (dom, dom_after, violations) = {
        let (base, page_url, polls, shot) =
            (base.clone(), page_url.clone(), polls.clone(), shot.clone());
        let (till, analyst) = (till.clone(), analyst.clone());
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut page = Page::open(1400, 1000).unwrap();
            // Refused: the login form, no figures.
            page.navigate(&page_url, SIGNED_IN).unwrap();
            let at = page.evaluate("location.pathname + location.search").unwrap();
            assert_eq!(at, "/login?next=%2F%3Ffrom%3D2024-05-01%26to%3D2024-05-03");
            let form = page.evaluate("document.documentElement.outerHTML").unwrap();
            let form = form.as_str().unwrap();
            assert!(form.contains("id=\"login-form\"") && !form.contains("kpi-revenue"));
            // A key without reports:read is turned away on the form.
            sign_in(&mut page, &till);
            page.wait_for(
                "(document.getElementById('login-message') || {}).textContent.includes('reports:read')",
                SIGNED_IN,
            )
            .unwrap();
            // Signed in: back where the browser was going, with the figures.
            sign_in(&mut page, &analyst);
            page.wait_for(
                "location.pathname === '/' && document.getElementById('kpi-revenue').dataset.value",
                SIGNED_IN,
            )
            .unwrap();
            assert_eq!(page.evaluate("location.search").unwrap(), "?from=2024-05-01&to=2024-05-03");
            // The session cookie: out of scripts' reach, never sent by another site.
            let cookies = page.cookies(&base).unwrap();
            let session = cookies
                .iter()
                .find(|c| c["name"] == "brewlytics_dashboard_session")
                .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
            assert_eq!(session["httpOnly"], true, "{session}");
            assert_eq!(session["sameSite"], "Strict", "{session}");
            assert_eq!(session["secure"], false, "plain HTTP: {session}");
            assert_eq!(session["path"], "/", "{session}");
            let script_sees = page.evaluate("document.cookie").unwrap();
            assert!(!script_sees.as_str().unwrap().contains("brewlytics_dashboard_session"));
            // The page refreshes itself (every 5 s).
            let polls_before = polls.load(Ordering::Relaxed);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while polls.load(Ordering::Relaxed) < polls_before + 2 {
                assert!(std::time::Instant::now() < deadline, "the page did not refresh");
                std::thread::sleep(Duration::from_millis(200));
            }
            let dom = page.evaluate("document.documentElement.outerHTML").unwrap();

            // New data shows on the next load.
            handle.block_on(async {
                sqlx::query(
                    "update fact_sales set status = 'completed' where order_id = '00000000-0000-0000-0000-000000000902'",
                )
                .execute(&pool)
                .await
                .unwrap();
            });
            page.navigate(&page_url, SIGNED_IN).unwrap();
            page.wait_for(
                "(document.getElementById('kpi-today-revenue').dataset || {}).value === '14.50'",
                SIGNED_IN,
            )
            .unwrap();
            page.screenshot(&shot).unwrap();
            let dom_after = page.evaluate("document.documentElement.outerHTML").unwrap();
            let violations = page.csp_violations();

            // Signing out ends the session.
            page.evaluate("document.getElementById('logout').click(); true").unwrap();
            page.wait_for("location.pathname === '/login'", SIGNED_IN).unwrap();
            page.navigate(&page_url, SIGNED_IN).unwrap();
            assert_eq!(page.evaluate("location.pathname").unwrap(), "/login");
            (dom, dom_after, violations)
        })
        .await
        .unwrap()
    };
    assert!(
        violations.is_empty(),
        "the page broke its Content-Security-Policy: {violations:#?}"
    );
    let dom = dom.as_str().unwrap().to_owned();

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
    let dom_after = dom_after.as_str().unwrap();
    assert!(
        element(dom_after, "kpi-today-revenue").ends_with(">14.50"),
        "{}",
        element(dom_after, "kpi-today-revenue")
    );
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 20_000, "screenshot of {size} bytes");

    // Revoking the key ends its sessions: the open page is sent back to the login form.
    let revoked_page = {
        let (page_url, analyst) = (page_url.clone(), analyst.clone());
        let mut page = tokio::task::spawn_blocking(move || {
            let mut page = Page::open(1000, 800).unwrap();
            page.navigate(&page_url, SIGNED_IN).unwrap();
            sign_in(&mut page, &analyst);
            page.wait_for("location.pathname === '/'", SIGNED_IN)
                .unwrap();
            page
        })
        .await
        .unwrap();
        keys.revoke("analyst").await;
        tokio::task::spawn_blocking(move || {
            // The page polls every 5 s; its next poll is refused and it goes to the form.
            page.wait_for("location.pathname === '/login'", SIGNED_IN)
                .map(|_| ())
        })
        .await
        .unwrap()
    };
    assert!(revoked_page.is_ok(), "the revoked key's session went on");
    assert_eq!(
        reader
            .get(format!("{base}/api/summary"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

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
    // Both ways the tests read a page report it: a one-shot render, and a DevTools session.
    let (rendered, session) = tokio::task::spawn_blocking(move || {
        let rendered = browser::render(&url, &BrowserOptions::default()).unwrap();
        let mut page = Page::open(800, 600).unwrap();
        page.navigate(&url, Duration::from_secs(30)).unwrap();
        let dom = page.evaluate("document.documentElement.outerHTML").unwrap();
        (rendered, (dom, page.csp_violations()))
    })
    .await
    .unwrap();
    server.abort();
    assert!(rendered.dom.contains(">static<"), "{}", rendered.dom);
    let violations = rendered.csp_violations();
    assert_eq!(violations.len(), 1, "{:#?}", rendered.console);
    assert!(violations[0].contains("inline script"), "{}", violations[0]);
    let (dom, violations) = session;
    assert!(dom.as_str().unwrap().contains(">static<"), "{dom}");
    assert_eq!(violations.len(), 1, "{violations:#?}");
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
