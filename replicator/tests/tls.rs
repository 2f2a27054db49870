//! TLS on the replication connection against a real PostgreSQL server with `ssl = on` and a
//! self-signed certificate made by `openssl` for this test: each `sslmode` encrypts (the
//! server's `pg_stat_ssl` says so), checks what it promises, and fails clearly otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use brewlytics_replicator::stream::config::ReplicationConfig;
use brewlytics_replicator::stream::conn::{ConnError, ReplicationConnection};
use brewlytics_support::testing::{Scratch, TestCertificate};
use brewlytics_support::{ClusterOptions, DbUrl, EmbeddedCluster};

/// A throwaway CA and server certificate (support::testing), the key readable by the server's
/// user: (ca, server cert, server key).
fn make_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let TestCertificate { ca, cert, key } = TestCertificate::make(dir);
    let root = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() == "0" {
        // The server runs as `postgres`; its key must be its own and private.
        let ok = Command::new("chown")
            .arg("-R")
            .arg("postgres")
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    (ca, cert, key)
}

fn config(cluster: &EmbeddedCluster, host: &str, query: &str) -> ReplicationConfig {
    let url = cluster.url("postgres");
    let text = url
        .expose()
        .replace("127.0.0.1", host)
        .replace("/postgres", &format!("/postgres?{query}"));
    ReplicationConfig::from_url(&DbUrl::parse(&text).unwrap()).unwrap()
}

async fn encrypted(cfg: &ReplicationConfig) -> Result<bool, ConnError> {
    let mut conn = ReplicationConnection::connect(cfg).await?;
    let rows = conn
        .simple_query("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .await?;
    conn.close().await;
    Ok(rows.first().and_then(|r| r[0].as_deref()) == Some("t"))
}

#[tokio::test]
async fn every_sslmode_does_what_it_says() {
    let scratch = Scratch::new("tls");
    let (ca, cert, key) = make_certificate(scratch.path());
    let mut opts = ClusterOptions::throwaway();
    opts.settings = vec![
        ("ssl".into(), "on".into()),
        ("ssl_cert_file".into(), cert.display().to_string()),
        ("ssl_key_file".into(), key.display().to_string()),
    ];
    let tls_server = EmbeddedCluster::start(opts).expect("a server with ssl = on");
    let ca = format!("sslrootcert={}", ca.display());

    // Encrypted without checks, and in the clear when asked.
    assert!(
        encrypted(&config(&tls_server, "127.0.0.1", "sslmode=require"))
            .await
            .unwrap()
    );
    assert!(
        encrypted(&config(&tls_server, "127.0.0.1", "sslmode=prefer"))
            .await
            .unwrap()
    );
    assert!(
        !encrypted(&config(&tls_server, "127.0.0.1", "sslmode=disable"))
            .await
            .unwrap()
    );
    // Checked against the given root: by name (DNS and IP) and by chain only.
    for (host, mode) in [
        ("localhost", "verify-full"),
        ("127.0.0.1", "verify-full"),
        ("localhost", "verify-ca"),
    ] {
        let cfg = config(&tls_server, host, &format!("sslmode={mode}&{ca}"));
        assert!(encrypted(&cfg).await.unwrap(), "{host} {mode}");
    }
    // Our test CA is not among the bundled roots.
    let err = encrypted(&config(&tls_server, "localhost", "sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnError::Tls(_)), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // A missing root file is named.
    let err = encrypted(&config(
        &tls_server,
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    // A server without TLS: `require` refuses to go on in the clear, `prefer` goes on.
    let plain = EmbeddedCluster::start(ClusterOptions::throwaway()).unwrap();
    let err = encrypted(&config(&plain, "127.0.0.1", "sslmode=require"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not accept TLS"), "{err}");
    assert!(!encrypted(&config(&plain, "127.0.0.1", "sslmode=prefer"))
        .await
        .unwrap());
    drop(tls_server);
}
