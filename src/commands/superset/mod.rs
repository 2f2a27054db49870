//! Apache Superset: `brewlytics dashboards superset` provisions any Superset with the coffee
//! dashboard; `brewlytics up --superset` also runs one locally ([`local`]) and provisions it.

pub mod local;

use std::path::Path;

use super::bi;
use crate::cli::{SupersetArgs, SupersetUpArgs};
use anyhow::Context;
use brewlytics_dashboards::connection::{OlapConnection, Secret, Target};
use brewlytics_dashboards::definition::Definition;
use brewlytics_dashboards::superset;

/// `brewlytics dashboards superset`.
pub async fn provision(args: SupersetArgs) -> anyhow::Result<()> {
    let password = match args.password {
        Some(p) => p,
        None => {
            let file = local::admin_password_file(&args.db.data_dir);
            std::fs::read_to_string(&file)
                .map(|t| t.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no --password (SUPERSET_PASSWORD) given, and no {} of `up --superset`",
                        file.display()
                    )
                })?
        }
    };
    let olap = bi::connection(&args.db, &args.bi, args.olap_host.as_deref())?;
    let target = Target {
        url: args.url,
        user: args.user,
        password: Secret::new(password),
    };
    let done = superset::provision(&target, &olap, &Definition::load()?).await?;
    println!("Superset provisioned: {done}");
    Ok(())
}

/// A local Superset, provisioned: what `up` prints and stops.
pub struct Running {
    pub superset: local::LocalSuperset,
    pub dashboard_url: String,
}

/// Starts the local Superset of `data_dir` and provisions it with the coffee dashboard over
/// `olap` (the read-only role).
pub async fn start(
    args: &SupersetUpArgs,
    data_dir: &Path,
    olap: &OlapConnection,
) -> anyhow::Result<Running> {
    let running =
        local::LocalSuperset::start(&args.superset_venv, data_dir, args.superset_listen).await?;
    let target = Target {
        url: running.url.clone(),
        user: local::ADMIN.into(),
        password: running.password.clone(),
    };
    match superset::provision(&target, olap, &Definition::load()?).await {
        Ok(done) => {
            tracing::info!(%done, "superset provisioned");
            Ok(Running {
                superset: running,
                dashboard_url: done.dashboard_url,
            })
        }
        Err(e) => {
            running.stop().await;
            Err(anyhow::Error::new(e).context("provisioning Superset"))
        }
    }
}
