//! `brewlytics loadtest`: the load generator of `brewlytics-loadtest`, with databases from
//! `OLTP_DATABASE_URL`/`OLAP_DATABASE_URL` or the embedded cluster of `brewlytics up`.

use anyhow::Context;
use brewlytics_loadtest::{Databases, LoadtestArgs};

use crate::cli::DbArgs;
use crate::databases;

pub async fn run(db: DbArgs, mut args: LoadtestArgs) -> anyhow::Result<()> {
    // The key: BREWLYTICS_API_KEY (--api-key), else the one `up` wrote to its data directory.
    if args.api_key.is_none() {
        args.api_key = super::api_key::read_local(&db.data_dir).and_then(|k| k.parse().ok());
    }
    // Either URL alone is fine here: OLAP for freshness, OLTP for the menu.
    let (oltp, olap) = match (&db.oltp_url, &db.olap_url) {
        (None, None) => match databases::resolve(&db) {
            Ok(urls) => (Some(urls.oltp), Some(urls.olap)),
            Err(_) => (None, None),
        },
        (oltp, olap) => (oltp.clone(), olap.clone()),
    };
    let dbs = Databases {
        oltp: oltp.map(|u| u.connect_options()).transpose()?,
        olap: olap.map(|u| u.connect_options()).transpose()?,
    };
    let json = args.json;
    let report = brewlytics_loadtest::run(args, dbs)
        .await
        .context("load test")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
