//! The replicator's status page in real headless Chromium: refused without signing in (the
//! browser is sent to the login form; `/status` and `/metrics` answer 401, `/health` and
//! `/ready` stay open), a key without `ops:read` turned away, and after signing in it renders
//! the live values of a running `brewlytics replicate` (role, slot, changes applied, dead
//! letters, lag and its chart) under its Content-Security-Policy — a violation reported on
//! the console fails the test —, with an `HttpOnly`, `SameSite=Strict` session cookie. Every
//! endpoint sends the security headers. A screenshot is saved as
//! `$CARGO_TARGET_TMPDIR/replicator-status.png`.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use brewlytics_support::devtools::Page;
use harness::{exchange, free_addr, wait_streaming, workload, Clusters, LoadCounts};

/// The response headers of `GET path`, lowercased names.
async fn headers_of(addr: &str, path: &str) -> Vec<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// The text inside the element with `id`.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let open_end = dom[start..].find('>').unwrap() + start + 1;
    let close = dom[open_end..].find("</").unwrap() + open_end;
    dom[open_end..close].trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_live_values() {
    let c = Clusters::start();
    c.prepare(20);
    let addr = free_addr();
    let mut r = c.replicator("status-page", &addr, &[]);
    wait_streaming(&addr, &r).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = tokio::spawn(workload(c.oltp_url(), stop.clone(), counts.clone(), 11));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    // A source column the star reads, dropped: the page names it.
    let mut oltp = c.oltp_conn().await;
    sqlx::raw_sql(
        "alter table customers drop column email;
         insert into customers (name) values ('No-Email');",
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    assert!(c.converged(Duration::from_secs(30)).await.all_equal());
    // A few more monitor samples for the chart.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut olap = c.olap_conn().await;
    let streamed: i64 = sqlx::query_scalar(
        "select count(*) from cdc_events
             where op in ('i', 'u', 'd', 't') or op = 's' and coalesce(xid, 0) <> 0",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert!(streamed > 0);

    // /status carries the heartbeat lag of the running process at its top level too.
    let status: serde_json::Value = serde_json::from_str(
        &harness::http_get(&addr, "/status")
            .await
            .expect("/status")
            .1,
    )
    .unwrap();
    let top = status["lag_seconds"]
        .as_f64()
        .expect("lag_seconds in /status");
    let live = status["replicator"]["lag_seconds"]
        .as_f64()
        .expect("heartbeat lag");
    assert!(top < 2.0 && live < 2.0, "{status}");

    for path in [
        "/",
        "/assets/status.js",
        "/assets/status.css",
        "/status",
        "/metrics",
        "/nope",
    ] {
        let h = headers_of(&addr, path).await;
        let get = |name: &str| {
            h.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {name} on {path}: {h:?}"))
        };
        assert_eq!(
            get("content-security-policy"),
            brewlytics_support::web::PAGE_POLICY
        );
        assert_eq!(get("x-content-type-options"), "nosniff");
        assert_eq!(get("referrer-policy"), "no-referrer");
        assert_eq!(get("x-frame-options"), "DENY");
    }

    // Without a key: the probes answer, nothing else does.
    let ops = c.api_key("ops", "ops:read");
    let analyst = c.api_key("analyst", "reports:read");
    for (path, status) in [
        ("/health", 200),
        ("/ready", 200),
        ("/status", 401),
        ("/metrics", 401),
        ("/", 303),
    ] {
        let a = exchange(&addr, "GET", path, &[], None).expect(path);
        assert_eq!(a.status, status, "{path}: {}", a.body);
    }
    let bearer = |k: &str| format!("Bearer {k}");
    for (key, status) in [(&analyst, 403), (&ops, 200)] {
        for path in ["/status", "/metrics"] {
            let a =
                exchange(&addr, "GET", path, &[("Authorization", &bearer(key))], None).expect(path);
            assert_eq!(a.status, status, "{path}: {}", a.body);
        }
    }

    let url = format!("http://{addr}/");
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replicator-status.png");
    let (dom, violations) = {
        let (url, shot, addr) = (url.clone(), shot.clone(), addr.clone());
        tokio::task::spawn_blocking(move || {
            let wait = Duration::from_secs(30);
            let mut page = Page::open(1400, 1000).expect("chromium");
            page.navigate(&url, wait).unwrap();
            assert_eq!(page.evaluate("location.pathname").unwrap(), "/login");
            page.submit("login-form", &[("key", &analyst)], wait).unwrap();
            page.wait_for(
                "(document.getElementById('login-message') || {}).textContent.includes('ops:read')",
                wait,
            )
            .unwrap();
            page.submit("login-form", &[("key", &ops)], wait).unwrap();
            // The first load and at least one 2-second refresh.
            page.wait_for(
                "location.pathname === '/' && document.getElementById('role').textContent === 'streaming'",
                wait,
            )
            .unwrap();
            std::thread::sleep(Duration::from_secs(3));
            let cookies = page.cookies(&format!("http://{addr}/")).unwrap();
            let session = cookies
                .iter()
                .find(|c| c["name"] == "brewlytics_replicator_session")
                .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
            assert_eq!(session["httpOnly"], true, "{session}");
            assert_eq!(session["sameSite"], "Strict", "{session}");
            page.screenshot(&shot).unwrap();
            let dom = page.evaluate("document.documentElement.outerHTML").unwrap();
            (dom.as_str().unwrap_or_default().to_owned(), page.csp_violations())
        })
        .await
        .unwrap()
    };
    assert!(
        violations.is_empty(),
        "the status page broke its Content-Security-Policy: {violations:#?}"
    );
    assert_eq!(text_of(&dom, "role"), "streaming");
    assert_eq!(text_of(&dom, "slot"), "brewlytics");
    assert_eq!(text_of(&dom, "active"), "true");
    assert_eq!(text_of(&dom, "wal-status"), "reserved");
    assert_eq!(text_of(&dom, "changes"), streamed.to_string());
    assert_eq!(text_of(&dom, "dead-letters"), "0");
    assert_eq!(text_of(&dom, "in-progress"), "0 open, 0 B spooled");
    let lag = text_of(&dom, "lag-seconds");
    assert!(lag.ends_with(" ms"), "lag shown as {lag:?}");
    let checkpoint = text_of(&dom, "checkpoint");
    assert!(
        checkpoint.contains('/'),
        "checkpoint shown as {checkpoint:?}"
    );
    // The chart has a lag line with a point per monitor sample.
    let line_at = dom.find("id=\"lag-line\"").expect("the lag line is drawn");
    let tag = &dom[dom[..line_at].rfind('<').unwrap()..];
    let points = tag
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        points.split(' ').count() >= 3,
        "too few chart points: {points}"
    );
    assert_eq!(text_of(&dom, "error"), "none");
    let degraded = text_of(&dom, "star-degraded");
    assert!(
        degraded
            .starts_with("dim_customer.email: source column public.customers.email dropped at "),
        "{degraded}"
    );
    assert_eq!(text_of(&dom, "star-dead-letters"), "0");

    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    println!("screenshot: {}", shot.display());
    assert!(r.terminate(Duration::from_secs(30)).success());
}
