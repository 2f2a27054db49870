//! Load generator for the Brewlytics API with end-to-end freshness (`brewlytics loadtest`).
//!
//! It drives the REST API like a Monday-morning rush — orders from known customers and
//! walk-ins, baskets of 1–5 items from the live menu, statuses advanced, some orders cancelled,
//! a few deleted, new customers and products, the odd price change — either open-loop at a
//! fixed arrival rate (`--rate`; latency counted from each request's *intended* start, so a
//! slow server cannot hide its queueing) or closed-loop with `--users N`. For a sample of the
//! orders it measures freshness: the time from the API's 201 until the order's facts are
//! visible in OLAP `fact_sales`, polled with one set-based query per poll.
//!
//! Pure parts (schedule, histogram, scenario, report) are separate modules and unit-tested;
//! `world` acts on the API, `drive` paces the load, [`run`] puts them together.

mod drive;
pub mod freshness;
pub mod histogram;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod schedule;
mod world;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use report::Report;
pub use scenario::Mix;

use report::RunInfo;
use schedule::{parse_duration, OpenSchedule};
use world::{bootstrap, World};

/// `brewlytics loadtest` options. Databases come from `OLTP_DATABASE_URL` /
/// `OLAP_DATABASE_URL` (or the embedded cluster of `brewlytics up`): see [`Databases`].
#[derive(clap::Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub api: String,
    /// The API key sent with every request (`Authorization: Bearer`); it needs orders:write,
    /// and for the `rush` mix catalog:write and customers:write too. Default: the key
    /// `brewlytics up` wrote to its data directory (`.brewlytics/api-key`).
    #[arg(long, env = "BREWLYTICS_API_KEY", hide_env_values = true)]
    pub api_key: Option<brewlytics_support::auth::key::ClientKey>,
    /// Open loop: requests started per second, on a fixed schedule (default 50 when --users
    /// is not given).
    #[arg(long, conflicts_with = "users")]
    pub rate: Option<f64>,
    /// Closed loop: this many users, each sending its next request when the last one answered.
    #[arg(long)]
    pub users: Option<usize>,
    /// How long the load runs (e.g. 30s, 2m, 1500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The request mix: `rush` (the whole scenario) or `orders` (POST /orders only).
    #[arg(long, value_enum, default_value = "rush")]
    pub mix: Mix,
    /// Items per order, fixed (quantity 1 each); default a random basket of 1–5 items.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=50))]
    pub items: Option<u8>,
    /// Fraction of placed orders whose freshness is followed (0–1).
    #[arg(long, default_value_t = 1.0)]
    pub sample: f64,
    /// How often OLAP is polled for the pending sampled orders, in ms.
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
    /// After the load, how long to wait for sampled orders still missing from OLAP.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub freshness_wait: Duration,
    /// Do not measure freshness (no OLAP connection needed).
    #[arg(long)]
    pub no_freshness: bool,
    /// Per-request timeout (a request not answered in time counts as `timeout`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Most requests in flight at once (open loop); later arrivals wait, their latency
    /// still counted from their scheduled start.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Random seed (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Where the menu and customers are read, and where freshness is measured.
#[derive(Debug, Clone, Default)]
pub struct Databases {
    /// OLTP, for the live menu and customer ids (else OLAP's `replica.*` is read).
    pub oltp: Option<PgConnectOptions>,
    /// OLAP, for freshness (and the menu when OLTP is not given).
    pub olap: Option<PgConnectOptions>,
}

/// Runs the load test and returns its report. The first Ctrl-C/SIGTERM stops the load (the
/// report still comes, after the bounded freshness wait); a second one skips the wait.
pub async fn run(args: LoadtestArgs, dbs: Databases) -> anyhow::Result<Report> {
    let rate = check(&args)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = SmallRng::seed_from_u64(seed);
    let base = args.api.trim_end_matches('/').to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &args.api_key {
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .context("the API key is not a valid header value")?;
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(args.timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(args.max_in_flight.max(args.users.unwrap_or(0)))
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;

    // Freshness needs OLAP; connect first so a wrong URL fails before any load.
    let olap_conn = match (&dbs.olap, args.no_freshness) {
        (_, true) => None,
        (Some(olap), false) => Some(
            freshness::connect(olap)
                .await
                .context("connecting to OLAP for freshness (or pass --no-freshness)")?,
        ),
        (None, false) => bail!(
            "freshness needs OLAP: set OLAP_DATABASE_URL (or run `brewlytics up`), or pass --no-freshness"
        ),
    };

    let world = Arc::new(bootstrap(client, base.clone(), &dbs, &args, seed, &mut rng).await?);

    let (signals, stop_rx, abort_rx) = signals();
    let start = Instant::now();
    let beside = Beside::start(&world, olap_conn, &args, start);

    let mut tasks = JoinSet::new();
    load(
        &world,
        &mut tasks,
        &args,
        rate,
        seed,
        start,
        stop_rx.clone(),
    )
    .await;
    let interrupted = *stop_rx.borrow();
    let elapsed = if interrupted {
        start.elapsed().min(args.duration)
    } else {
        args.duration
    };
    drive::drain(&mut tasks, args.timeout, abort_rx.clone()).await;
    let waited = beside.finish(&world, args.freshness_wait, &abort_rx).await;
    signals.abort();

    let info = RunInfo {
        api: base,
        rate,
        users: args.users,
        mix: args.mix.name().into(),
        duration: args.duration,
        elapsed,
        interrupted,
    };
    let freshness = match (&world.tracker, args.no_freshness) {
        (Some(t), false) => Some(
            t.lock()
                .expect("tracker lock")
                .report(waited, poll_every(&args)),
        ),
        _ => None,
    };
    let recorder = world.recorder.lock().expect("recorder lock").clone();
    Ok(Report::build(&info, &recorder, freshness))
}

/// The first Ctrl-C/SIGTERM turns `stop` true, a second one `abort`.
fn signals() -> (
    tokio::task::JoinHandle<()>,
    watch::Receiver<bool>,
    watch::Receiver<bool>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        brewlytics_support::shutdown::signal().await;
        let _ = stop_tx.send(true);
        brewlytics_support::shutdown::signal().await;
        let _ = abort_tx.send(true);
    });
    (task, stop_rx, abort_rx)
}

fn poll_every(args: &LoadtestArgs) -> Duration {
    Duration::from_millis(args.poll_ms.max(1))
}

/// What runs beside the load: the freshness poller and the progress bar.
struct Beside {
    poll_stop: watch::Sender<bool>,
    poller: Option<tokio::task::JoinHandle<()>>,
    bar_stop: watch::Sender<bool>,
    bar: Option<tokio::task::JoinHandle<()>>,
    waiting: Arc<AtomicBool>,
}

impl Beside {
    fn start(
        world: &Arc<World>,
        olap: Option<sqlx::PgConnection>,
        args: &LoadtestArgs,
        start: Instant,
    ) -> Self {
        let (poll_stop, poll_stop_rx) = watch::channel(false);
        let poller = match (olap, &world.tracker) {
            (Some(conn), Some(tracker)) => Some(tokio::spawn(freshness::poll(
                conn,
                tracker.clone(),
                poll_every(args),
                poll_stop_rx,
            ))),
            _ => None,
        };
        let waiting = Arc::new(AtomicBool::new(false));
        let (bar_stop, bar_stop_rx) = watch::channel(false);
        let bar = (!args.no_progress && progress::stderr_is_tty()).then(|| {
            tokio::spawn(drive::progress_loop(
                world.clone(),
                start,
                args.duration,
                waiting.clone(),
                bar_stop_rx,
            ))
        });
        Self {
            poll_stop,
            poller,
            bar_stop,
            bar,
            waiting,
        }
    }

    /// After the load: waits (bounded) for the sampled orders still missing from OLAP, then
    /// stops; returns how long it waited.
    async fn finish(
        self,
        world: &World,
        wait: Duration,
        abort: &watch::Receiver<bool>,
    ) -> Duration {
        let waited = match self.poller {
            Some(_) => drive::wait_for_freshness(world, wait, &self.waiting, abort).await,
            None => Duration::ZERO,
        };
        let _ = self.poll_stop.send(true);
        if let Some(p) = self.poller {
            let _ = tokio::time::timeout(Duration::from_secs(6), p).await;
        }
        let _ = self.bar_stop.send(true);
        if let Some(bar) = self.bar {
            let _ = bar.await;
        }
        waited
    }
}

/// The flags checked before anything starts; the arrival rate (None: closed loop).
fn check(args: &LoadtestArgs) -> anyhow::Result<Option<f64>> {
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number");
        }
    }
    if args.users == Some(0) {
        bail!("--users must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.sample) {
        bail!("--sample must be between 0 and 1");
    }
    Ok(match args.users {
        Some(_) => None,
        None => Some(args.rate.unwrap_or(50.0)),
    })
}

/// The load itself, open loop at `rate` or closed loop with `--users`.
async fn load(
    world: &Arc<World>,
    tasks: &mut JoinSet<()>,
    args: &LoadtestArgs,
    rate: Option<f64>,
    seed: u64,
    start: Instant,
    stop: watch::Receiver<bool>,
) {
    match (rate, args.users) {
        (Some(rate), _) => {
            let schedule = OpenSchedule::new(rate, args.duration);
            let max_in_flight = args.max_in_flight.max(1);
            drive::open_loop(
                world,
                tasks,
                schedule,
                args.mix,
                max_in_flight,
                args.timeout,
                start,
                seed,
                stop,
            )
            .await
        }
        (None, Some(users)) => {
            let deadline = start + args.duration;
            drive::closed_loop(world, tasks, users, args.mix, seed, deadline, stop).await
        }
        (None, None) => unreachable!("rate defaults when users is absent"),
    }
}
