//! `brewlytics api-key create|list|revoke`, and the key `brewlytics up` keeps in its data
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use brewlytics_support::auth::key::PresentedKey;
use brewlytics_support::auth::{admin, Scopes};
use sqlx::PgPool;

use crate::cli::ApiKeyCommand;
use crate::databases;

/// The file in the data directory holding `up`'s key.
pub const KEY_FILE: &str = "api-key";

pub async fn run(command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create { name, scopes, db } => {
            let pool = databases::pool(&databases::resolve_oltp(&db)?, 1).await?;
            let scopes = Scopes::new(scopes);
            let key = admin::create(&pool, &name, &scopes).await?;
            // The key alone on stdout (`KEY=$(brewlytics api-key create …)`), the rest on
            // stderr.
            eprintln!(
                "key {name:?} (id {}) with {scopes}; shown this once, stored only as a hash:",
                key.id
            );
            println!("{}", key.text);
            eprintln!("use it as `Authorization: Bearer <key>` (or sign in with it on the dashboard and status page)");
            Ok(())
        }
        ApiKeyCommand::List { json, db } => {
            let pool = databases::pool(&databases::resolve_oltp(&db)?, 1).await?;
            let keys = admin::list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print!("{}", table(&keys));
            }
            Ok(())
        }
        ApiKeyCommand::Revoke { key, db } => {
            let pool = databases::pool(&databases::resolve_oltp(&db)?, 1).await?;
            let revoked = admin::revoke(&pool, &key).await?;
            println!(
                "revoked key {:?} (id {}): every server refuses it from now on",
                revoked.name, revoked.id
            );
            Ok(())
        }
    }
}

fn table(keys: &[admin::KeyInfo]) -> String {
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "{:<16}  {:<20}  {:<19}  {:<19}  {:<19}  scopes\n",
        "id", "name", "created", "last used", "revoked"
    );
    for k in keys {
        out.push_str(&format!(
            "{:<16}  {:<20}  {:<19}  {:<19}  {:<19}  {}\n",
            k.id,
            k.name,
            k.created_at.format("%Y-%m-%d %H:%M:%S"),
            time(&k.last_used_at),
            time(&k.revoked_at),
            k.scopes.join(",")
        ));
    }
    out
}

/// The key `up` uses: the one in `<data_dir>/api-key` while it is valid, else a new one with
/// every scope (the old one of this data directory revoked), written there with mode 0600.
/// Returns the file's path.
pub async fn local_key(oltp: &PgPool, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let file = data_dir.join(KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Some(key) = PresentedKey::parse(text.trim()) {
            if admin::is_active(oltp, &key.id).await? {
                return Ok(file);
            }
        }
    }
    let name = local_name(data_dir);
    match admin::revoke(oltp, &name).await {
        Ok(_) | Err(admin::AdminError::NotFound(_) | admin::AdminError::AlreadyRevoked(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let key = admin::create(oltp, &name, &Scopes::all()).await?;
    write_private(&file, &format!("{}\n", key.text))
        .with_context(|| format!("writing the API key to {}", file.display()))?;
    tracing::info!(key = %key.id, file = %file.display(), "made a local API key with every scope");
    Ok(file)
}

/// `up`'s key name: one per data directory.
fn local_name(data_dir: &Path) -> String {
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let name = format!("local {}", dir.display());
    match name.char_indices().nth(64) {
        Some((cut, _)) => name[..cut].to_owned(),
        None => name,
    }
}

/// Creates (or replaces) `file` readable by its owner only.
fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

/// The key of `<data_dir>/api-key`, when there is one (the load generator's default).
pub fn read_local(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(KEY_FILE)).ok()?;
    let key = text.trim();
    PresentedKey::parse(key).map(|_| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_name_fits_and_names_the_directory() {
        let n = local_name(Path::new("/tmp/x"));
        assert_eq!(n, "local /tmp/x");
        let long = local_name(&Path::new("/").join("d".repeat(200)));
        assert_eq!(long.chars().count(), 64);
    }

    #[test]
    fn the_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("brewlytics-key-{}", std::process::id()));
        let file = dir.join(KEY_FILE);
        write_private(&file, "brw_x\n").unwrap();
        write_private(&file, "brw_y\n").unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "brw_y\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
