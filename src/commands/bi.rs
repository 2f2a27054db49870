//! Which database URL a BI tool (Metabase, Superset) gets for coffee_olap: `--bi-url` when
//! given; else, with the embedded cluster, its read-only `brewlytics_reader` (made by `up`);
//! else `OLAP_DATABASE_URL`, with a warning that its role may be able to write.

use std::path::Path;

use crate::cli::{BiArgs, DbArgs};
use crate::databases;
use anyhow::Context;
use brewlytics_dashboards::connection::OlapConnection;
use brewlytics_support::roles::{self, RolePasswords};
use brewlytics_support::{DbUrl, EmbeddedCluster};

/// The connection the BI tool gets; `host` replaces the URL's host (the address at which the
/// tool, e.g. in a container, sees the server).
pub fn connection(db: &DbArgs, bi: &BiArgs, host: Option<&str>) -> anyhow::Result<OlapConnection> {
    let url = choose(bi.bi_url.clone(), db.olap_url.as_ref(), || {
        embedded_reader(&db.data_dir)
    })?;
    Ok(OlapConnection::from_url(&url, host)?)
}

/// `bi_url` when given; else the OLAP URL of a database that is not the embedded cluster
/// (with a warning); else the embedded cluster's read-only role (`reader`).
pub fn choose(
    bi_url: Option<DbUrl>,
    olap: Option<&DbUrl>,
    reader: impl FnOnce() -> anyhow::Result<DbUrl>,
) -> anyhow::Result<DbUrl> {
    match (bi_url, olap) {
        (Some(url), _) => Ok(url),
        (None, Some(olap)) => {
            tracing::warn!(
                url = %olap,
                "the BI tool connects with OLAP_DATABASE_URL, whose role may be able to write: \
                 give --bi-url with a read-only role (brewlytics_reader of deploy/roles.sql)"
            );
            Ok(olap.clone())
        }
        (None, None) => reader(),
    }
}

/// Creates (or updates) the roles of deploy/roles.sql on the embedded cluster, their
/// passwords kept in its data directory: the read-only role's URL.
pub async fn embedded_roles(cluster: &EmbeddedCluster) -> anyhow::Result<DbUrl> {
    let dir = cluster.data_dir().to_path_buf();
    let passwords =
        tokio::task::spawn_blocking(move || RolePasswords::load_or_make(&dir)).await??;
    // psql takes a fraction of a second; blocking here keeps the cluster borrowed.
    tokio::task::block_in_place(|| roles::apply(cluster, &passwords))
        .context("creating the roles of deploy/roles.sql")?;
    Ok(roles::reader_url(
        cluster.port(),
        &passwords,
        databases::OLAP_DB,
    ))
}

/// The embedded cluster's read-only role (`brewlytics up` makes it).
pub fn embedded_reader(data_dir: &Path) -> anyhow::Result<DbUrl> {
    let urls = databases::resolve(&DbArgs {
        oltp_url: None,
        olap_url: None,
        data_dir: data_dir.to_path_buf(),
    })?;
    let file = data_dir.join(roles::FILE);
    let passwords = RolePasswords::load(&file).with_context(|| {
        format!(
            "no read-only role yet ({} is missing): start the cluster with this version's \
             `brewlytics up`, which creates it",
            file.display()
        )
    })?;
    let port = urls
        .olap
        .connect_options()
        .map(|o| o.get_port())
        .context("the embedded cluster's URL")?;
    Ok(roles::reader_url(port, &passwords, databases::OLAP_DB))
}
