//! Keys end to end, against the built binary: `brewlytics up` over HTTPS with a throwaway
//! certificate — every server answers TLS only, the session cookie is `Secure` —, the key
//! `up` wrote opening what it should, keys made and revoked with `brewlytics api-key` (a
//! revoked key refused at once, by the API and the replicator alike), and a marker search:
//! no key's secret in `up`'s log, in any `/metrics`, `/status`, page or `api-key list`.

mod harness;

use std::time::{Duration, Instant};

use brewlytics_support::testing::TestCertificate;
use harness::{Proc, Scratch};

/// An HTTPS client trusting the test CA, not following redirects.
fn client(ca: &std::path::Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn get(c: &reqwest::Client, url: &str, key: Option<&str>) -> Got {
    let mut req = c.get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    Got {
        status,
        headers,
        body: res.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_over_https_with_keys_and_no_key_anywhere_it_should_not_be() {
    let scratch = Scratch::new("auth-e2e");
    let tls = TestCertificate::make(&scratch.join("tls"));
    let data = scratch.join("data");
    let mut cmd = harness::up::command(&data);
    cmd.args(["--seed-orders", "10"])
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .env("RUST_LOG", "debug,sqlx=debug");
    let mut up = Proc::spawn(cmd, scratch.join("up.log")).gentle();
    let addrs = harness::up::wait(&mut up);
    let log = up.log_text();
    assert!(log.contains(&format!("https://{}", addrs.api)), "{log}");
    let key = addrs.key.clone();
    assert!(key.starts_with("brw_") && key.len() == 64);
    assert!(!log.contains(&key[21..]), "up printed its key");
    let c = client(&tls.ca);
    let (api, repl, dash) = (
        format!("https://{}", addrs.api),
        format!("https://{}", addrs.replicator),
        format!("https://{}", addrs.dashboard),
    );

    // TLS only: a plain HTTP request gets no HTTP answer.
    for addr in [&addrs.api, &addrs.replicator, &addrs.dashboard] {
        assert!(
            harness::exchange(addr, "GET", "/health", &[], None).is_none(),
            "{addr} answered plain HTTP"
        );
    }
    // Open, refused, served.
    assert_eq!(get(&c, &format!("{api}/health"), None).await.status, 200);
    let refused = get(&c, &format!("{api}/stores"), None).await;
    assert_eq!(refused.status, 401);
    assert!(refused.headers.contains_key("www-authenticate"));
    assert!(refused.headers.contains_key("content-security-policy"));
    assert_eq!(
        get(&c, &format!("{api}/stores"), Some(&key)).await.status,
        200
    );
    let order = serde_json::json!({"customer_id": 1, "employee_id": 1, "store_id": 1,
        "payment_method": "card", "items": [{"product_id": 1, "quantity": 2}]});
    let placed = c
        .post(format!("{api}/orders"))
        .bearer_auth(&key)
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    // The probes need no key (ready or not yet).
    let ready = get(&c, &format!("{repl}/ready"), None).await;
    assert!(ready.body.contains("\"ready\""), "{}", ready.body);
    assert_eq!(get(&c, &format!("{repl}/status"), None).await.status, 401);
    assert_eq!(
        get(&c, &format!("{dash}/api/summary"), None).await.status,
        401
    );

    // The dashboard's session cookie over HTTPS is Secure as well.
    let login = c
        .post(format!("{dash}/login"))
        .form(&[("key", key.as_str()), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap();
    let page = c
        .get(format!("{dash}/"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    // A till's key, made and revoked with the CLI: refused at once, everywhere.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_brewlytics"))
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env_remove("OLTP_DATABASE_URL")
            .env_remove("OLAP_DATABASE_URL")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let till = cli(&[
        "api-key",
        "create",
        "--name",
        "till-1",
        "--scope",
        "orders:write,ops:read",
    ]);
    let till = till.trim().to_owned();
    let wrong = format!("{}{}", &till[..21], &key[21..]);
    let order = format!("{api}/orders/{}", uuid::Uuid::nil());
    let (stores, metrics) = (format!("{api}/stores"), format!("{repl}/metrics"));
    // orders:write reads orders (an unknown one: 404), not the catalog; ops:read the metrics.
    for (url, key, status) in [
        (&order, &till, 404),
        (&stores, &till, 403),
        (&metrics, &till, 200),
        (&stores, &wrong, 401),
    ] {
        assert_eq!(get(&c, url, Some(key)).await.status, status, "{url}");
    }
    cli(&["api-key", "revoke", "till-1"]);
    // Each server hears of the revocation by its notification: milliseconds, but a loaded
    // machine may delay it; 2 s is the most this test allows.
    let revoked = Instant::now();
    for url in [&order, &stores, &metrics] {
        loop {
            let status = get(&c, url, Some(&till)).await.status;
            if status == 401 {
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(2),
                "{url} after revoke: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The marker search: the secrets of every key used, in nothing that can be read.
    let mut readable = vec![
        ("api-key list", cli(&["api-key", "list"])),
        ("api-key list --json", cli(&["api-key", "list", "--json"])),
    ];
    for (what, url) in [
        ("API /metrics", format!("{api}/metrics")),
        ("replicator /metrics", format!("{repl}/metrics")),
        ("dashboard /metrics", format!("{dash}/metrics")),
        ("/status", format!("{repl}/status")),
        ("status page", format!("{repl}/")),
        ("dashboard page", format!("{dash}/")),
        ("OpenAPI", format!("{api}/openapi.json")),
    ] {
        let got = get(&c, &url, Some(&key)).await;
        assert_eq!(got.status, 200, "{what}: {}", got.body);
        readable.push((what, got.body));
    }
    let metrics = &readable
        .iter()
        .find(|(w, _)| *w == "API /metrics")
        .unwrap()
        .1;
    assert!(
        metrics.contains("brewlytics_auth_failures_total{reason=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(up.terminate(Duration::from_secs(60)).success());
    readable.push(("up's log", up.log_text()));
    for (what, text) in &readable {
        for secret in [&key[21..], &till[21..]] {
            assert!(!text.contains(secret), "a key's secret is in {what}");
        }
    }
}

#[test]
fn the_keys_are_never_published() {
    let c = harness::Clusters::start();
    let psql = |sql: &str| c.oltp.psql("coffee_oltp", sql);
    // An OLTP whose publication takes every table: the keys would go with it.
    psql("create publication everything for all tables").unwrap();
    let out = c.command(&["migrate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "migrate let the keys be published");
    assert!(
        stderr.contains("publish the API keys") && stderr.contains("everything"),
        "{stderr}"
    );
    psql("drop publication everything").unwrap();
    c.prepare(5);
    // Once migrated (as a superuser), no publication may start to publish them.
    let refused = psql("create publication everything for all tables").unwrap_err();
    assert!(
        refused.to_string().contains("would publish the API keys")
            || refused.to_string().contains("publish the API keys"),
        "{refused}"
    );
    // Without the event trigger (a migration run by a non-superuser), the replicator refuses
    // to stream such a publication.
    psql("drop event trigger brewlytics_keys_unpublished").unwrap();
    psql("create publication everything for all tables").unwrap();
    let line = {
        let out = c
            .command(&["replicate", "--publication", "everything"])
            .env("REPLICATOR_LISTEN", harness::free_addr())
            .output()
            .unwrap();
        assert!(!out.status.success(), "the replicator streamed the keys");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        line.contains("publish the API keys (auth.api_keys)") && line.contains("everything"),
        "{line}"
    );
    // Nothing of the keys reached OLAP.
    let olap_tables = c
        .olap
        .psql(
            "coffee_olap",
            "select count(*) from pg_tables where tablename = 'api_keys'",
        )
        .unwrap();
    assert_eq!(olap_tables.trim(), "0", "{olap_tables}");
}
