//! The pinned dbt of `.venv`, run against the warehouse as the README says
//! (`eval "$(brewlytics dbt-env)"`), and what it reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use super::{BIN, VARS};

const INSTALL: &str = "python3 -m venv .venv && .venv/bin/pip install -r dbt/requirements.txt";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dbt of `.venv` (or `DBT_BIN`), checked against the pins of dbt/requirements.txt.
/// Missing, it fails the test with what to install.
pub fn dbt_bin() -> PathBuf {
    let bin = std::env::var_os("DBT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/dbt"));
    if !bin.is_file() {
        let python = Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let venv = python
            && Command::new("python3")
                .args(["-c", "import venv, ensurepip"])
                .output()
                .is_ok_and(|o| o.status.success());
        let python_note = match (python, venv) {
            (false, _) => "; python3 is missing: install it first (Debian/Ubuntu: `apt-get install python3 python3-venv`)",
            (true, false) => "; python3 cannot create virtual environments here: `apt-get install python3-venv` first (Debian/Ubuntu)",
            (true, true) => "",
        };
        panic!(
            "dbt not found at {}: this test runs the dbt project in dbt/ with the pinned dbt-core and \
             dbt-postgres. Install them from the repository root with `{INSTALL}`{python_note} \
             (or set DBT_BIN to a dbt executable of those versions).",
            bin.display()
        );
    }
    // The versions installed, read by the environment's own Python (no network).
    let python = bin.with_file_name("python");
    if python.is_file() {
        let pins = std::fs::read_to_string(repo().join("dbt/requirements.txt")).unwrap();
        for line in pins.lines().filter(|l| l.contains("==")) {
            let (package, version) = line.trim().split_once("==").unwrap();
            let out = Command::new(&python)
                .args([
                    "-c",
                    &format!("import importlib.metadata as m; print(m.version('{package}'))"),
                ])
                .output()
                .expect("running the virtual environment's python");
            let installed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert_eq!(
                installed, version,
                "{package} {installed:?} is installed, dbt/requirements.txt pins {version}: reinstall with `{INSTALL}`"
            );
        }
    }
    bin
}

/// One dbt invocation: whether it succeeded, its output, and its artifact (run_results.json,
/// or sources.json for `source freshness`).
pub struct DbtRun {
    pub ok: bool,
    pub output: String,
    pub artifact: Value,
}

impl DbtRun {
    /// Node name → status, from the artifact (`pipeline.replication_checkpoint` for sources).
    pub fn statuses(&self) -> BTreeMap<String, String> {
        self.artifact["results"]
            .as_array()
            .expect("results in the dbt artifact")
            .iter()
            .map(|r| {
                let id = r["unique_id"].as_str().unwrap();
                let parts: Vec<&str> = id.split('.').collect();
                let name = if parts[0] == "source" {
                    parts[2..].join(".")
                } else {
                    parts[2].to_owned()
                };
                (name, r["status"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    pub fn failed(&self) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|(_, s)| s != "success" && s != "pass")
            .map(|(n, s)| format!("{n}={s}"))
            .collect()
    }

    pub fn result(&self, name: &str) -> &Value {
        self.artifact["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["unique_id"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(".{name}"))
            })
            .unwrap_or_else(|| panic!("{name} in the dbt artifact: {}", self.output))
    }
}

pub struct Dbt {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub target: PathBuf,
    pub logs: PathBuf,
}

impl Dbt {
    /// `eval "$(brewlytics dbt-env)"`, then `dbt ARGS` from the repository root, with this
    /// test's freshness thresholds and its target and log directories.
    pub fn run(&self, args: &[&str]) -> DbtRun {
        let artifact = self.target.join(if args[0] == "source" {
            "sources.json"
        } else {
            "run_results.json"
        });
        let _ = std::fs::remove_file(&artifact);
        let start = Instant::now();
        let out = Command::new("sh")
            .args([
                "-c",
                r#"eval "$("$BREWLYTICS" dbt-env)" && exec "$DBT" "$@""#,
                "sh",
            ])
            .args(args)
            .args(["--vars", VARS])
            .current_dir(repo())
            .env("BREWLYTICS", BIN)
            .env("DBT", &self.bin)
            .env("BREWLYTICS_DATA_DIR", &self.data)
            .env("DBT_TARGET_PATH", &self.target)
            .env("DBT_LOG_PATH", &self.logs)
            .env("DBT_USE_COLORS", "false")
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .env_remove("OLAP_DATABASE_URL")
            .env_remove("OLTP_DATABASE_URL")
            .env_remove("SLOT_NAME")
            .env_remove("DBT_PROFILES_DIR")
            .env_remove("DBT_PROJECT_DIR")
            .output()
            .expect("running sh");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "dbt {} ({:.1} s): {}",
            args.join(" "),
            start.elapsed().as_secs_f64(),
            output
                .lines()
                .rev()
                .find(|l| l.contains("Done.") || l.contains("Finished"))
                .unwrap_or("")
                .trim()
        );
        let artifact = std::fs::read_to_string(&artifact)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        DbtRun {
            ok: out.status.success(),
            output,
            artifact,
        }
    }
}

pub fn grep_files(dir: &Path, needle: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            grep_files(&path, needle, found);
        } else if std::fs::read(&path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            found.push(path);
        }
    }
}
