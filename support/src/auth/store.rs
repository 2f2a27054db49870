//! The key store: the rows of `auth.api_keys` in the OLTP database, held in memory by every
//! server that checks keys, so a request's check costs no query.
//!
//! - **Fresh**: a trigger sends `NOTIFY brewlytics_api_keys` when a key is created, revoked
//!   or changed; each server listens and reloads before its next check, so a revoked key is
//!   refused within milliseconds everywhere. Without the notification (the listening
//!   connection lost) the copy is reloaded at least every [`MAX_AGE`]. A refused key
//!   reloads it and is checked again (at most once per [`UNKNOWN_RELOAD_EVERY`]), so a key
//!   made a moment ago works at once even when its notification is still on the way.
//! - **Same steps for every wrong key**: an unknown id is compared against a digest no key
//!   has, so a wrong secret for a known id and an unknown id take the same work, and the
//!   comparison is constant-time.
//! - **Last used, cheaply**: a check records the time in memory; a background task writes
//!   the latest time of each key used every [`FLUSH_EVERY`] in one `UPDATE` (which does not
//!   wake the listeners). `api-key list` so shows it to within that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;

use super::key::{Digest, KeyId, PresentedKey};
use super::scope::{Scope, Scopes};

/// The channel the table's trigger notifies.
pub const CHANNEL: &str = "brewlytics_api_keys";
/// The longest a server checks keys against a copy it has not reloaded.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// The most often a refused key reloads the copy (refused keys cost no more than that in
/// queries, however many are presented).
pub const UNKNOWN_RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How often the last-used times are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(15);

/// Who a request is: the key it authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: KeyId,
    pub name: String,
    pub scopes: Scopes,
}

/// Why a presented key is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No key has this id, or its secret is wrong.
    Invalid,
    /// The key was revoked.
    Revoked,
}

/// The key store could not be read and no copy of it is at hand.
#[derive(Debug, thiserror::Error)]
#[error("reading the API keys: {0}")]
pub struct StoreUnavailable(#[source] pub sqlx::Error);

#[derive(Debug)]
struct Record {
    name: String,
    scopes: Scopes,
    digest: Digest,
    revoked: bool,
}

#[derive(Default)]
struct Copy {
    keys: Arc<HashMap<KeyId, Record>>,
    loaded: Option<Instant>,
}

/// The keys as a server sees them. Create with [`KeyStore::new`] inside a Tokio runtime to
/// have it listen for changes and write last-used times; without one it still works,
/// reloading every [`MAX_AGE`].
pub struct KeyStore {
    pool: PgPool,
    copy: RwLock<Copy>,
    reload: tokio::sync::Mutex<()>,
    stale: AtomicBool,
    refused_reloaded: Mutex<Option<Instant>>,
    used: Mutex<HashMap<KeyId, DateTime<Utc>>>,
    unmatchable: Digest,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl KeyStore {
    /// A store reading `pool`'s database (the OLTP one).
    pub fn new(pool: PgPool) -> Arc<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let store = Arc::new(Self {
            pool,
            copy: RwLock::new(Copy::default()),
            reload: tokio::sync::Mutex::new(()),
            stale: AtomicBool::new(true),
            refused_reloaded: Mutex::new(None),
            used: Mutex::new(HashMap::new()),
            unmatchable: Digest::unmatchable(),
            _stop: stop,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            // A connection of its own: the listener holds it for as long as it listens.
            let listening = PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with((*store.pool.connect_options()).clone());
            tokio::spawn(listen(listening, Arc::downgrade(&store), stopped));
            tokio::spawn(flush_periodically(Arc::downgrade(&store)));
        }
        store
    }

    /// Reloads the keys now (a test that just made one, a server starting).
    pub async fn refresh(&self) -> Result<usize, StoreUnavailable> {
        self.stale.store(true, Ordering::Release);
        Ok(self.current().await?.len())
    }

    /// The keys, reloaded first when told they changed or when older than [`MAX_AGE`]. A
    /// failed reload keeps the last copy (and says so); with none, the store is unavailable.
    async fn current(&self) -> Result<Arc<HashMap<KeyId, Record>>, StoreUnavailable> {
        if let Some(keys) = self.fresh_copy() {
            return Ok(keys);
        }
        let _one_reload = self.reload.lock().await;
        if let Some(keys) = self.fresh_copy() {
            return Ok(keys);
        }
        // Cleared before reading: a change committed during the read notifies again.
        self.stale.store(false, Ordering::Release);
        match load(&self.pool).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let mut copy = self.copy.write().unwrap_or_else(|e| e.into_inner());
                copy.keys = keys.clone();
                copy.loaded = Some(Instant::now());
                Ok(keys)
            }
            Err(e) => {
                self.stale.store(true, Ordering::Release);
                let copy = self.copy.read().unwrap_or_else(|e| e.into_inner());
                match copy.loaded {
                    Some(_) => {
                        tracing::warn!(error = %e, "reloading the API keys failed; checking against the last copy");
                        Ok(copy.keys.clone())
                    }
                    None => Err(StoreUnavailable(e)),
                }
            }
        }
    }

    fn fresh_copy(&self) -> Option<Arc<HashMap<KeyId, Record>>> {
        if self.stale.load(Ordering::Acquire) {
            return None;
        }
        let copy = self.copy.read().unwrap_or_else(|e| e.into_inner());
        copy.loaded
            .filter(|at| at.elapsed() < MAX_AGE)
            .map(|_| copy.keys.clone())
    }

    /// Checks a presented key: its principal, or why not.
    pub async fn verify(
        &self,
        key: &PresentedKey,
    ) -> Result<Result<Principal, KeyRefusal>, StoreUnavailable> {
        let keys = self.current().await?;
        let verdict = self.check(&keys, key);
        // A refused key reloads the copy once (rate-limited) and is checked again: a key made
        // a moment ago may not have been announced yet. Every refusal takes this path, an
        // unknown id and a wrong secret alike, so their timing tells nothing apart.
        if matches!(verdict, Err(KeyRefusal::Invalid)) && self.may_reload_for_refused() {
            self.stale.store(true, Ordering::Release);
            let keys = self.current().await?;
            return Ok(self.check(&keys, key));
        }
        Ok(verdict)
    }

    fn check(
        &self,
        keys: &HashMap<KeyId, Record>,
        key: &PresentedKey,
    ) -> Result<Principal, KeyRefusal> {
        let record = keys.get(&key.id);
        let expected = record.map_or(&self.unmatchable, |r| &r.digest);
        let matches = key.digest().matches(expected);
        match record {
            Some(r) if matches && !r.revoked => {
                self.touch(&key.id);
                Ok(Principal {
                    key_id: key.id.clone(),
                    name: r.name.clone(),
                    scopes: r.scopes.clone(),
                })
            }
            Some(r) if matches && r.revoked => Err(KeyRefusal::Revoked),
            _ => Err(KeyRefusal::Invalid),
        }
    }

    /// Whether a refused key may reload the copy now (once per [`UNKNOWN_RELOAD_EVERY`]).
    fn may_reload_for_refused(&self) -> bool {
        let mut last = self
            .refused_reloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_RELOAD_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The principal of a key known by id (a browser session's), while it is not revoked.
    pub async fn active(&self, id: &KeyId) -> Result<Option<Principal>, StoreUnavailable> {
        let keys = self.current().await?;
        Ok(keys.get(id).filter(|r| !r.revoked).map(|r| {
            self.touch(id);
            Principal {
                key_id: id.clone(),
                name: r.name.clone(),
                scopes: r.scopes.clone(),
            }
        }))
    }

    /// Whether any key that is not revoked exists (a server with none refuses everything,
    /// and says so at start).
    pub async fn any_active(&self) -> Result<bool, StoreUnavailable> {
        Ok(self.current().await?.values().any(|r| !r.revoked))
    }

    fn touch(&self, id: &KeyId) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.insert(id.clone(), Utc::now());
    }

    /// Writes the last-used times recorded since the last write (one statement).
    pub async fn flush_last_used(&self) -> Result<(), sqlx::Error> {
        let pending: Vec<(KeyId, DateTime<Utc>)> = {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            used.drain().collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = pending.iter().map(|(id, _)| id.to_string()).collect();
        let times: Vec<DateTime<Utc>> = pending.iter().map(|(_, at)| *at).collect();
        let written = sqlx::query(
            "update auth.api_keys k
             set last_used_at = greatest(k.last_used_at, u.at)
             from unnest($1::text[], $2::timestamptz[]) as u(id, at)
             where k.id = u.id",
        )
        .bind(&ids)
        .bind(&times)
        .execute(&self.pool)
        .await;
        if written.is_err() {
            // Kept for the next attempt (a later use of the same key wins).
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            for (id, at) in pending {
                let slot = used.entry(id).or_insert(at);
                *slot = (*slot).max(at);
            }
        }
        written.map(|_| ())
    }
}

/// A row as read: id, name, scopes, digest, revoked.
type KeyRow = (String, String, Vec<String>, Vec<u8>, bool);

async fn load(pool: &PgPool) -> Result<HashMap<KeyId, Record>, sqlx::Error> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "select id, name, scopes, secret_hash, revoked_at is not null from auth.api_keys",
    )
    .fetch_all(pool)
    .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for (id, name, scopes, hash, revoked) in rows {
        let (Some(id), Some(digest)) = (KeyId::parse(&id), Digest::from_bytes(&hash)) else {
            tracing::warn!(key = %id, "an API key row is malformed; it matches no key");
            continue;
        };
        // A scope this version does not know (a key made by a newer one) grants nothing.
        let scopes = Scopes::new(scopes.iter().filter_map(|s| s.parse::<Scope>().ok()));
        keys.insert(
            id,
            Record {
                name,
                scopes,
                digest,
                revoked,
            },
        );
    }
    Ok(keys)
}

/// Marks the store stale on every notification, and when the listening connection was lost
/// (notifications may have been missed). Ends when the store is dropped.
async fn listen(
    pool: PgPool,
    store: Weak<KeyStore>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mark = |store: &Weak<KeyStore>| {
        if let Some(s) = store.upgrade() {
            s.stale.store(true, Ordering::Release);
        }
    };
    let mut backoff = Duration::from_millis(250);
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = &mut stopped => return,
            l = connected => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "listening for API key changes failed; retrying");
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        // Changes made before the listener was in place are read by a reload.
        mark(&store);
        backoff = Duration::from_millis(250);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                n = listener.try_recv() => match n {
                    Ok(_) => mark(&store),
                    Err(_) => {
                        mark(&store);
                        break;
                    }
                },
            }
        }
    }
}

/// Writes last-used times every [`FLUSH_EVERY`] while the store lives.
async fn flush_periodically(store: Weak<KeyStore>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(s) = store.upgrade() else { return };
        if let Err(e) = s.flush_last_used().await {
            tracing::debug!(error = %e, "writing API keys' last use failed; retrying later");
        }
    }
}
