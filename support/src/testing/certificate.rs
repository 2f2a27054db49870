//! A throwaway certificate authority and a server certificate it signed for `localhost` and
//! `127.0.0.1`, made by `openssl` (Debian package `openssl`), for tests of TLS servers and
//! clients.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files: the CA's certificate (to trust), the server's certificate and private key
/// (mode 0600).
#[derive(Debug, Clone)]
pub struct TestCertificate {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCertificate {
    /// Makes them in `dir` (created), valid for two days.
    pub fn make(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let p = |name: &str| dir.join(name).display().to_string();
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let steps: [Vec<String>; 3] = [
            [
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=brewlytics test CA",
            ]
            .into_iter()
            .map(String::from)
            .chain(["-keyout".into(), p("ca.key"), "-out".into(), p("ca.crt")])
            .collect(),
            [
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ]
            .into_iter()
            .map(String::from)
            .chain([
                "-keyout".into(),
                p("server.key"),
                "-out".into(),
                p("server.csr"),
            ])
            .collect(),
            ["x509", "-req", "-days", "2", "-CAcreateserial"]
                .into_iter()
                .map(String::from)
                .chain([
                    "-in".into(),
                    p("server.csr"),
                    "-CA".into(),
                    p("ca.crt"),
                    "-CAkey".into(),
                    p("ca.key"),
                    "-extfile".into(),
                    p("ext.cnf"),
                    "-out".into(),
                    p("server.crt"),
                ])
                .collect(),
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .output()
                .expect("openssl (Debian package openssl) makes the test certificates");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let key = dir.join("server.key");
        let ok = Command::new("chmod").arg("600").arg(&key).status().unwrap();
        assert!(ok.success());
        Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key,
        }
    }
}
