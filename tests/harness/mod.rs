//! The one harness of the end-to-end tests (each test binary includes it with `mod harness;`):
//! a source and a target PostgreSQL cluster of their own, the built `brewlytics` binary and
//! other servers run as child processes (stopped when their guards drop), scratch
//! directories, ports that no other test or outgoing connection takes, plain HTTP, an order
//! workload written straight to OLTP, and the checks that OLAP equals OLTP. A real NATS
//! cluster is in [`nats`], Prometheus in [`prom`], `brewlytics up` in [`up`].

#![allow(dead_code)]

pub mod nats;
pub mod net;
pub mod process;
pub mod prom;
pub mod sql;
pub mod up;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use brewlytics_support::testing::Scratch;
#[allow(unused_imports)]
pub use net::{exchange, free_addr, free_port, http, http_get, remember_key};
#[allow(unused_imports)]
pub use process::{wait_for, Proc};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brewlytics_replicator::verify;
use brewlytics_support::auth::key::NewKey;
use brewlytics_support::{ClusterOptions, DbUrl, EmbeddedCluster};
use sqlx::{Connection, PgConnection};

/// OLTP and OLAP as two servers, like a deployment.
pub struct Clusters {
    pub oltp: EmbeddedCluster,
    pub olap: EmbeddedCluster,
}

impl Clusters {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra settings on the source server.
    pub fn start_with(oltp_settings: &[(&str, &str)]) -> Self {
        Self::start_configured(oltp_settings, &[])
    }

    /// With extra settings on each server.
    pub fn start_configured(
        oltp_settings: &[(&str, &str)],
        olap_settings: &[(&str, &str)],
    ) -> Self {
        let options = |settings: &[(&str, &str)]| {
            let mut opts = ClusterOptions::throwaway();
            opts.settings = settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            opts
        };
        let oltp = EmbeddedCluster::start(options(oltp_settings)).expect("OLTP cluster");
        oltp.ensure_database("coffee_oltp").unwrap();
        let olap = EmbeddedCluster::start(options(olap_settings)).expect("OLAP cluster");
        olap.ensure_database("coffee_olap").unwrap();
        Self { oltp, olap }
    }

    pub fn oltp_url(&self) -> DbUrl {
        self.oltp.url("coffee_oltp")
    }

    pub fn olap_url(&self) -> DbUrl {
        self.olap.url("coffee_olap")
    }

    /// `brewlytics` with both URLs in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_brewlytics"));
        c.args(args)
            .env("OLTP_DATABASE_URL", self.oltp_url().expose())
            .env("OLAP_DATABASE_URL", self.olap_url().expose())
            .env("BREWLYTICS_DATA_DIR", scratch_dir("unused"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// `brewlytics replicate` run to its end, expected to refuse: its last line on stderr
    /// (panics with the whole of it when it succeeded).
    pub fn replicate_refusal(&self) -> String {
        let out = self
            .command(&["replicate"])
            .env("REPLICATOR_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "replicate went on: {stderr}");
        stderr.lines().last().unwrap_or_default().to_owned()
    }

    /// Runs a command to completion; panics with its output when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("running brewlytics");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "brewlytics {args:?} failed: {text}");
        text
    }

    /// Migrations and master data plus `orders` historical orders.
    pub fn prepare(&self, orders: u32) {
        self.run(&["migrate"]);
        self.run(&["seed", "--orders", &orders.to_string()]);
        self.register_test_key();
    }

    /// Puts [`test_key`] in OLTP's key table (once migrated; again is harmless).
    pub fn register_test_key(&self) {
        let key = test_key();
        let hex: String = key
            .digest
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let _ = self.oltp.psql(
            "coffee_oltp",
            &format!(
                "insert into auth.api_keys (id, name, scopes, secret_hash) \
                 values ('{}', 'harness', array['admin'], '\\x{hex}') on conflict do nothing",
                key.id
            ),
        );
    }

    /// A new key with `scopes` (comma-separated), made with `brewlytics api-key create`.
    pub fn api_key(&self, name: &str, scopes: &str) -> String {
        let out = self
            .command(&["api-key", "create", "--name", name, "--scope", scopes])
            .output()
            .expect("running brewlytics api-key create");
        assert!(
            out.status.success(),
            "api-key create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Starts `brewlytics replicate` with its log in a file; endpoints on `listen`.
    pub fn replicator(&self, name: &str, listen: &str, extra_env: &[(&str, &str)]) -> Proc {
        self.replicator_with(name, listen, &[], extra_env)
    }

    /// [`Clusters::replicator`] with extra arguments to `replicate`.
    pub fn replicator_with(
        &self,
        name: &str,
        listen: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Proc {
        let log = scratch_dir("logs").join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut all = vec!["replicate"];
        all.extend_from_slice(args);
        self.register_test_key();
        remember_key(listen, &test_key().text);
        let mut c = self.command(&all);
        c.env("REPLICATOR_LISTEN", listen)
            .env("HEARTBEAT_INTERVAL_MS", "200")
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        Proc::from_child(c.spawn().expect("starting brewlytics replicate"), log)
    }

    /// The source server's log (what its walsenders said).
    pub fn oltp_server_log(&self) -> String {
        let dir = self.oltp.data_dir().parent().expect("cluster root");
        std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
    }

    pub async fn oltp_conn(&self) -> PgConnection {
        connect(&self.oltp_url()).await
    }

    pub async fn olap_conn(&self) -> PgConnection {
        connect(&self.olap_url()).await
    }

    /// Waits (bounded) until OLAP equals OLTP; returns the last report.
    pub async fn converged(&self, within: Duration) -> verify::Report {
        self.converged_for("brewlytics", within).await
    }

    /// [`Clusters::converged`] for the tables of `publication` (several: comma-separated).
    pub async fn converged_for(&self, publication: &str, within: Duration) -> verify::Report {
        let start = Instant::now();
        loop {
            let attempt = async {
                let mut oltp = self.oltp_conn().await;
                let mut olap = self.olap_conn().await;
                verify::compare(&mut oltp, &mut olap, publication).await
            };
            match attempt.await {
                Ok(r) if r.all_equal() => return r,
                Ok(r) if start.elapsed() > within => return r,
                Err(e) if start.elapsed() > within => panic!("comparing OLAP with OLTP: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// What the star schema holds, by natural keys, with each sale's product version
    /// (valid_from): equal before and after a rebuild from the journal.
    pub async fn star_fingerprint(&self) -> Vec<String> {
        star_fingerprint_of(&mut self.olap_conn().await).await
    }

    /// No change journaled twice: (lsn, seq) unique, and no key inserted twice (keyless rows
    /// have none to compare, and no drill inserts a key twice).
    pub async fn journal_duplicates(&self) -> (i64, i64) {
        let mut olap = self.olap_conn().await;
        sqlx::query_as(
            "select (select count(*) - count(distinct (lsn, seq)) from cdc_events),
                    (select count(*) from (select source_table, key::text from cdc_events
                                           where op in ('i', 'r') and key is not null
                                           group by 1, 2 having count(*) > 1) d)",
        )
        .fetch_one(&mut olap)
        .await
        .unwrap()
    }
}

/// The checks every drill ends with; `label` names the drill in failures: OLAP equal to OLTP,
/// no change journaled twice, the star equal to a rebuild from the journal.
pub async fn assert_exactly_once(c: &Clusters, label: &str) {
    let report = c.converged(Duration::from_secs(90)).await;
    assert!(
        report.all_equal(),
        "{label}: OLAP differs from OLTP: {report:#?}"
    );
    let (dup_positions, dup_rows) = c.journal_duplicates().await;
    assert_eq!(
        (dup_positions, dup_rows),
        (0, 0),
        "{label}: journal duplicates"
    );
    let before = c.star_fingerprint().await;
    let out = c.run(&["replay", "--from-lsn", "0/0"]);
    assert!(out.contains("replayed"), "{out}");
    let after = c.star_fingerprint().await;
    assert_eq!(
        before, after,
        "{label}: the star schema differs from a rebuild from the journal"
    );
}

/// The `admin` key of this test binary: in the key table of every [`Clusters`] it prepares,
/// and remembered for the replicators it starts, so [`http`] and [`http_get`] carry it.
pub fn test_key() -> &'static NewKey {
    static KEY: std::sync::OnceLock<NewKey> = std::sync::OnceLock::new();
    KEY.get_or_init(NewKey::generate)
}

/// [`Clusters::star_fingerprint`] of any OLAP database.
pub async fn star_fingerprint_of(olap: &mut PgConnection) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "select count(*)::text || ' ' || coalesce(md5(string_agg(x, ',' order by x)), '') from (
           select concat_ws('|', f.order_item_id, f.order_id, f.date_key, c.customer_id, p.product_id,
                            p.valid_from, e.employee_id, s.store_id, f.quantity, f.unit_price,
                            f.revenue, f.status, f.ordered_at) x
           from fact_sales f join dim_customer c using (customer_key) join dim_product p using (product_key)
           join dim_employee e using (employee_key) join dim_store s using (store_key)) t",
        "select count(*)::text || ' ' || coalesce(md5(string_agg(x, ',' order by x)), '') from (
           select concat_ws('|', product_id, name, category, price, is_available, valid_from, valid_to, is_current) x
           from dim_product) t",
        "select count(*)::text || ' ' || coalesce(md5(string_agg(x, ',' order by x)), '') from (
           select concat_ws('|', payment_id, order_id, amount, method, order_status) x from fact_payments) t",
        "select count(*)::text || ' ' || coalesce(md5(string_agg(x, ',' order by x)), '') from (
           select concat_ws('|', i.date_key, s.store_id, p.product_id, i.reason, i.quantity_delta, i.movements) x
           from fact_inventory i join dim_store s using (store_key, store_id) join dim_product p using (product_key, product_id)) t",
    ] {
        let v: String = sqlx::query_scalar(sql)
            .fetch_one(&mut *olap)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
        out.push(v);
    }
    out
}

pub async fn connect(url: &DbUrl) -> PgConnection {
    PgConnection::connect_with(&url.connect_options().unwrap())
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// A directory under the target dir for this test binary's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("drills-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scratch directory on a file system of its own that holds only `bytes` (a tmpfs), for
/// drills of a full disk; unmounted when dropped. None when this user may not mount (the
/// drills run as root on CI).
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    pub fn mount(name: &str, bytes: u64) -> Option<Self> {
        let dir = scratch_dir(name);
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Waits (≤ 30 s) until the replicator serving on `addr` reports that it streams.
pub async fn wait_streaming(addr: &str, r: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(addr, "/health")
        .await
        .is_some_and(|(_, b)| b.contains("streaming"))
    {
        assert!(
            Instant::now() < deadline,
            "never streamed: {}",
            r.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The sum of a metric over all its label sets (0 when it has none yet).
pub fn metric_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Counts of what the workload did.
#[derive(Default)]
pub struct LoadCounts {
    pub orders: AtomicU64,
    pub updates: AtomicU64,
    pub deletes: AtomicU64,
    pub price_changes: AtomicU64,
    pub errors: AtomicU64,
}

/// A mixed order workload straight into OLTP until `stop`: new orders (items, payment,
/// inventory), status changes, deletes, price changes, restocks. Survives the source going
/// away (reconnects); a transaction that fails is rolled back and not counted.
pub async fn workload(url: DbUrl, stop: Arc<AtomicBool>, counts: Arc<LoadCounts>, seed: u64) {
    workload_paced(url, stop, counts, seed, None).await
}

/// [`workload_paced`] in the background until [`Background::stop`].
pub struct Background {
    stop: Arc<AtomicBool>,
    counts: Arc<LoadCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    pub fn start(url: DbUrl, seed: u64, pace: Option<Duration>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(LoadCounts::default());
        let task = tokio::spawn(workload_paced(
            url,
            stop.clone(),
            counts.clone(),
            seed,
            pace,
        ));
        Self { stop, counts, task }
    }

    /// Stops the workload once its step in progress ends; what it did.
    pub async fn stop(self) -> Arc<LoadCounts> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the workload panicked");
        self.counts
    }
}

/// [`workload`], at most one step per `pace` (a bounded volume, so a drill's time does not
/// grow with the machine's speed).
pub async fn workload_paced(
    url: DbUrl,
    stop: Arc<AtomicBool>,
    counts: Arc<LoadCounts>,
    seed: u64,
    pace: Option<Duration>,
) {
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n.max(1)
    };
    let mut conn: Option<PgConnection> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match PgConnection::connect_with(&url.connect_options().unwrap()).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        if let Some(p) = pace {
            tokio::time::sleep(p).await;
        }
        let c = conn.as_mut().unwrap();
        let pick = next(100);
        let r = one_step(c, pick, &mut next).await;
        match r {
            Ok(kind) => {
                let counter = match kind {
                    Step::Order => &counts.orders,
                    Step::Update => &counts.updates,
                    Step::Delete => &counts.deletes,
                    Step::Price => &counts.price_changes,
                    Step::Other => continue,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Step {
    Order,
    Update,
    Delete,
    Price,
    Other,
}

async fn one_step(
    c: &mut PgConnection,
    pick: u64,
    next: &mut impl FnMut(u64) -> u64,
) -> Result<Step, sqlx::Error> {
    let mut tx = c.begin().await?;
    let step = match pick {
        0..=59 => {
            let items = 1 + next(4) as i64;
            let walk_in = next(4) == 0;
            let id: uuid::Uuid = sqlx::query_scalar(
                "with o as (
                   insert into orders (id, customer_id, employee_id, store_id, payment_method, total)
                   select gen_random_uuid(),
                          case when $2 then null else (select id from customers order by random() limit 1) end,
                          e.id, e.store_id, 'card', 0
                   from employees e where e.active and e.store_id is not null order by random() limit 1
                   returning id, store_id),
                 i as (
                   insert into order_items (order_id, product_id, quantity, unit_price)
                   select o.id, p.id, 1 + (random() * 2)::int, p.price
                   from o, (select id, price from products where is_available order by random() limit $1) p
                   returning order_id, product_id, quantity, unit_price),
                 m as (
                   insert into inventory_movements (store_id, product_id, order_id, delta, reason)
                   select o.store_id, i.product_id, o.id, -i.quantity, 'sale' from o join i on i.order_id = o.id),
                 p as (
                   insert into payments (order_id, amount, method)
                   select o.id, (select sum(quantity * unit_price) from i), 'card' from o)
                 select id from o",
            )
            .bind(items)
            .bind(walk_in)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "update orders set total = (select sum(quantity * unit_price) from order_items where order_id = $1)
                 where id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            Step::Order
        }
        60..=84 => {
            sqlx::query(
                "update orders set status = case status when 'placed' then 'preparing'
                        when 'preparing' then (case when random() < 0.1 then 'cancelled' else 'ready' end)
                        else 'completed' end, updated_at = now()
                 where id = (select id from orders where status in ('placed', 'preparing', 'ready')
                             order by random() limit 1)",
            )
            .execute(&mut *tx)
            .await?;
            Step::Update
        }
        85..=89 => {
            sqlx::query(
                "delete from orders where id = (select id from orders order by random() limit 1)",
            )
            .execute(&mut *tx)
            .await?;
            Step::Delete
        }
        90..=93 => {
            sqlx::query(
                "update products set price = price + 0.10, updated_at = now()
                 where id = (select id from products order by random() limit 1)",
            )
            .execute(&mut *tx)
            .await?;
            Step::Price
        }
        _ => {
            sqlx::query(
                "insert into inventory_movements (store_id, product_id, delta, reason)
                 select (select id from stores order by random() limit 1),
                        (select id from products order by random() limit 1), 20, 'restock'",
            )
            .execute(&mut *tx)
            .await?;
            Step::Other
        }
    };
    tx.commit().await?;
    Ok(step)
}
