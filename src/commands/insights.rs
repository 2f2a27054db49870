//! `brewlytics report`, `brewlytics dashboard` and `brewlytics dashboards provision|superset`.

use anyhow::{bail, Context};
use brewlytics_dashboards::connection::Secret;
use brewlytics_dashboards::definition::Definition;
use brewlytics_dashboards::metabase::{self, Target};
use brewlytics_dashboards::question::{self, ParamType, ParamValue, Params};
use brewlytics_dashboards::report::{self, Format};
use brewlytics_support::listen::{self, Service};
use brewlytics_support::DbUrl;
use tokio::sync::watch;

use crate::access::Access;
use crate::cli::{DashboardArgs, DashboardsCommand, DbArgs, ReportArgs};
use crate::databases;

/// The OLAP URL: `--olap-url`/`OLAP_DATABASE_URL` alone is enough for these commands.
fn olap_url(db: &DbArgs) -> anyhow::Result<DbUrl> {
    match &db.olap_url {
        Some(url) => Ok(url.clone()),
        None => Ok(databases::resolve(db)?.olap),
    }
}

fn param_value(flag: &str, type_: ParamType, text: &str) -> anyhow::Result<ParamValue> {
    question::parse_value(type_, text.trim()).with_context(|| match type_ {
        ParamType::Date => format!("--{flag}: {text:?} is not a date (YYYY-MM-DD)"),
        ParamType::Integer => format!("--{flag}: {text:?} is not a whole number"),
    })
}

pub async fn report(args: ReportArgs) -> anyhow::Result<()> {
    if args.list {
        print!("{}", list());
        return Ok(());
    }
    let name = args.name.as_deref().unwrap_or_default();
    let q = question::find(name)?;
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let mut params = Params::new();
    for (flag, value, type_) in [
        ("from", &args.from, ParamType::Date),
        ("to", &args.to, ParamType::Date),
        ("store", &args.store, ParamType::Integer),
        ("limit", &args.limit, ParamType::Integer),
    ] {
        let Some(text) = value else { continue };
        let v = param_value(flag, type_, text)?;
        if q.param(flag).is_none() {
            bail!("report {name} takes no --{flag}");
        }
        if flag == "limit" && !matches!(v, ParamValue::Integer(n) if n > 0) {
            bail!("--limit must be at least 1");
        }
        params.insert(flag.to_owned(), v);
    }
    if let (Some(ParamValue::Date(from)), Some(ParamValue::Date(to))) =
        (params.get("from"), params.get("to"))
    {
        if from > to {
            bail!("--from {from} is after --to {to}");
        }
    }
    let url = olap_url(&args.db)?;
    let pool = databases::pool(&url, 1).await?;
    let table = report::run(&pool, &q, &params).await?;
    let text = table.render(format);
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn list() -> String {
    let mut out = String::new();
    for q in question::all() {
        let params: Vec<String> = q
            .params
            .iter()
            .map(|p| match p.default {
                Some(d) => format!("--{} (default {d})", p.name),
                None => format!("--{}", p.name),
            })
            .collect();
        out.push_str(&format!(
            "{:<20} {}\n{:<20} {}\n{:<20} options: {}\n",
            q.name,
            q.title,
            "",
            q.description,
            "",
            params.join(" ")
        ));
    }
    out
}

pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<()> {
    let url = olap_url(&args.db)?;
    // The keys are in OLTP: its URL, or the embedded cluster's.
    let oltp = match (&args.db.oltp_url, args.access.insecure_no_auth) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => None,
        (None, false) => databases::resolve(&args.db).ok().map(|urls| urls.oltp),
    };
    let access = Access::open(&args.access, oltp.as_ref())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        brewlytics_support::shutdown::signal().await;
        let _ = tx.send(true);
    });
    let listener = listen::bind(args.listen, DASHBOARD).await?;
    println!(
        "Dashboard on {}://{}",
        access.scheme(),
        listener.local_addr()?
    );
    run_dashboard(&url, listener, &access, rx).await
}

/// The dashboard of `brewlytics dashboard`.
const DASHBOARD: Service = Service {
    name: "dashboard",
    flag: "--listen",
    env: "DASHBOARD_LISTEN",
};

/// Serves the built-in dashboard over `olap` until `stop` turns true.
pub async fn run_dashboard(
    olap: &DbUrl,
    listener: tokio::net::TcpListener,
    access: &Access,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let pool = databases::pool(olap, 4).await?;
    let guard = access.guard(brewlytics_dashboards::web::access::guard_config());
    brewlytics_dashboards::web::serve(access.endpoint(listener), pool, guard, async move {
        let _ = stop.wait_for(|v| *v).await;
    })
    .await
    .context("serving the dashboard")
}

pub async fn dashboards(command: DashboardsCommand) -> anyhow::Result<()> {
    match command {
        DashboardsCommand::Provision(args) => {
            let def = Definition::load()?;
            let olap = super::bi::connection(&args.db, &args.bi, args.olap_host.as_deref())?;
            let target = Target {
                url: args.metabase_url,
                user: args.user,
                password: Secret::new(args.password),
            };
            let done = metabase::provision(&target, &olap, &def).await?;
            println!("Metabase provisioned: {done}");
            Ok(())
        }
        DashboardsCommand::Superset(args) => super::superset::provision(args).await,
    }
}
