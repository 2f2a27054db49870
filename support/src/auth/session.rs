//! Browser sessions of the pages (the dashboard, the replicator's status page): a random
//! token in a cookie, held by the server as a digest with the key it was opened with and its
//! expiry. A session is only as good as its key: each request checks that the key is still
//! active and holds the page's scope, so revoking the key ends its sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::key::{session_digest, session_token, KeyId};

/// Sessions kept at most (the oldest go first past it).
const MAX_SESSIONS: usize = 10_000;

/// How long a session lasts from login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug)]
struct Entry {
    key: KeyId,
    expires: Instant,
}

#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `key`: the token for the cookie.
    pub fn open(&self, key: KeyId, now: Instant) -> String {
        let (token, digest) = session_token();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, e| e.expires > now);
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.expires).map(|(d, _)| *d) {
                map.remove(&oldest);
            }
        }
        map.insert(
            digest,
            Entry {
                key,
                expires: now + self.ttl,
            },
        );
        token
    }

    /// The key of a live session.
    pub fn key_of(&self, token: &str, now: Instant) -> Option<KeyId> {
        let digest = session_digest(token);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&digest) {
            Some(e) if e.expires > now => Some(e.key.clone()),
            Some(_) => {
                map.remove(&digest);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, token: &str) {
        let digest = session_digest(token);
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest);
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v.trim())
    })
}

/// The `Set-Cookie` value opening a session: `HttpOnly` (no script reads it),
/// `SameSite=Strict` (no other site's page sends it), `Secure` when served over TLS.
pub fn set_cookie(name: &str, token: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    set_cookie(name, "", Duration::ZERO, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> KeyId {
        KeyId::parse("00112233445566ff").unwrap()
    }

    #[test]
    fn sessions_open_expire_and_close() {
        let s = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let token = s.open(id(), t0);
        assert_eq!(s.key_of(&token, t0), Some(id()));
        assert_eq!(s.key_of("forged", t0), None);
        assert_eq!(s.key_of(&token, t0 + Duration::from_secs(61)), None);
        assert!(s.is_empty(), "an expired session is forgotten");
        let token = s.open(id(), t0);
        s.close(&token);
        assert_eq!(s.key_of(&token, t0), None);
    }

    #[test]
    fn cookies_are_read_and_written_with_their_attributes() {
        assert_eq!(cookie("a=1; s=tok; b=2", "s"), Some("tok"));
        assert_eq!(cookie("as=1", "s"), None);
        let c = set_cookie("s", "tok", Duration::from_secs(60), false);
        assert_eq!(c, "s=tok; Path=/; Max-Age=60; HttpOnly; SameSite=Strict");
        assert!(set_cookie("s", "tok", Duration::from_secs(60), true).ends_with("; Secure"));
        assert!(clear_cookie("s", false).contains("Max-Age=0"));
    }
}
