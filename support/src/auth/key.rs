//! The API key format, made and checked without I/O.
//!
//! A key is `brw_<id>_<secret>`: `id` is 16 lowercase hex digits (64 random bits) naming the
//! key's row — public, like a user name, and what `api-key list` shows — and `secret` is 32
//! random bytes from the operating system's generator in unpadded base64url (43 characters).
//! The `brw_` prefix lets secret scanners and people recognise a key.
//!
//! Only a digest is stored: SHA-256 over a domain label, the id and the secret. A slow
//! password hash (argon2, bcrypt) exists to make guessing a *human-chosen* password from its
//! hash expensive; a 256-bit random secret cannot be guessed from its digest at any speed,
//! so a fast hash loses nothing and keeps each request's check in the microseconds. Hashing
//! the id in binds a digest to its row: a digest copied onto another row matches no key.
//! Digests are compared in constant time ([`Digest::matches`]).

use std::fmt;

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of every key.
pub const PREFIX: &str = "brw_";
/// Hex digits of a key id.
pub const ID_LEN: usize = 16;
/// Random bytes of a secret.
const SECRET_BYTES: usize = 32;
/// Characters of a secret (unpadded base64url of [`SECRET_BYTES`]).
pub const SECRET_LEN: usize = 43;
/// Characters of a whole key.
pub const KEY_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_LEN;

const DOMAIN: &[u8] = b"brewlytics-api-key-v1\0";

/// A key id: the public half of a key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a stored or typed id (16 lowercase hex digits).
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// A whole key as a client presents it. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedKey {
    pub id: KeyId,
    secret: String,
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedKey({PREFIX}{}_***)", self.id)
    }
}

impl PresentedKey {
    /// Parses `brw_<id>_<secret>`; `None` when the text cannot be a key (malformed).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != KEY_LEN {
            return None;
        }
        let rest = text.strip_prefix(PREFIX)?;
        let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
        let secret = secret.strip_prefix('_')?;
        let id = KeyId::parse(id)?;
        let secret_ok = secret.len() == SECRET_LEN
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        secret_ok.then(|| Self {
            id,
            secret: secret.to_owned(),
        })
    }

    /// The digest this key's row must hold.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.id, &self.secret)
    }
}

/// A key as a client holds it (the load generator, a test): parsed from the command line or
/// the environment, and never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey(String);

impl ClientKey {
    /// The text to send (`Authorization: Bearer <this>`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKey(***)")
    }
}

impl std::str::FromStr for ClientKey {
    type Err = String;

    /// Any non-empty text (the server judges it); surrounding space is dropped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the API key is empty".into());
        }
        Ok(Self(s.to_owned()))
    }
}

/// A freshly made key: the text to show once, and what to store.
pub struct NewKey {
    /// The whole key. Shown once, then forgotten.
    pub text: String,
    pub id: KeyId,
    pub digest: Digest,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({PREFIX}{}_***)", self.id)
    }
}

impl NewKey {
    /// A key from the operating system's random generator.
    pub fn generate() -> Self {
        let mut id = [0u8; ID_LEN / 2];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = KeyId(id.iter().map(|b| format!("{b:02x}")).collect());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let digest = Digest::of(&id, &secret);
        Self {
            text: format!("{PREFIX}{id}_{secret}"),
            id,
            digest,
        }
    }
}

/// The stored form of a key's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest(***)")
    }
}

impl Digest {
    fn of(id: &KeyId, secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(id.0.as_bytes());
        h.update(b"\0");
        h.update(secret.as_bytes());
        Self(h.finalize().into())
    }

    /// A stored digest (32 bytes), else `None`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A digest no key has, compared against when a key id is unknown so that the check
    /// takes the same steps either way.
    pub fn unmatchable() -> Self {
        Self([0u8; 32])
    }

    /// Equality in constant time.
    pub fn matches(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A random token for a browser session (32 bytes, base64url), and the digest it is kept
/// under: the server holds digests only, so a memory dump or a timing of the lookup tells
/// nothing about a live token.
pub fn session_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let digest = session_digest(&token);
    (token, digest)
}

/// The digest a session token is kept under.
pub fn session_digest(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"brewlytics-session-v1\0");
    h.update(token.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_key_parses_and_matches_its_digest() {
        let k = NewKey::generate();
        assert_eq!(k.text.len(), KEY_LEN);
        assert!(k.text.starts_with("brw_"));
        let p = PresentedKey::parse(&k.text).expect("a made key parses");
        assert_eq!(p.id, k.id);
        assert!(p.digest().matches(&k.digest));
        // Debug output never carries the secret.
        let secret = &k.text[PREFIX.len() + ID_LEN + 1..];
        for shown in [
            format!("{p:?}"),
            format!("{k:?}"),
            format!("{:?}", k.digest),
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn keys_are_random() {
        let a = NewKey::generate();
        let b = NewKey::generate();
        assert_ne!(a.text, b.text);
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn a_changed_character_or_a_moved_digest_does_not_match() {
        let k = NewKey::generate();
        let mut wrong = k.text.clone().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
        let wrong = PresentedKey::parse(std::str::from_utf8(&wrong).unwrap()).unwrap();
        assert!(!wrong.digest().matches(&k.digest));
        // The same secret under another id is another digest.
        let other = NewKey::generate();
        let swapped = format!(
            "{PREFIX}{}_{}",
            other.id,
            &k.text[PREFIX.len() + ID_LEN + 1..]
        );
        let swapped = PresentedKey::parse(&swapped).unwrap();
        assert!(!swapped.digest().matches(&k.digest));
        assert!(!k.digest.matches(&Digest::unmatchable()));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = NewKey::generate().text;
        let cases = [
            String::new(),
            "brw_".into(),
            good.replace("brw_", "brx_"),
            good[..good.len() - 1].to_owned(),
            format!("{good}A"),
            good.to_uppercase(),
            format!("{}={}", &good[..good.len() - 2], "x"),
            good.replacen('_', "-", 2),
            format!(" {}", &good[1..]),
        ];
        for c in cases {
            assert!(PresentedKey::parse(&c).is_none(), "{c:?}");
        }
        assert!(KeyId::parse("0123456789abcdef").is_some());
        assert!(KeyId::parse("0123456789ABCDEF").is_none());
        assert!(KeyId::parse("0123").is_none());
    }

    #[test]
    fn session_tokens_are_kept_as_digests() {
        let (token, digest) = session_token();
        assert_eq!(session_digest(&token), digest);
        assert_ne!(session_token().0, token);
        assert_eq!(token.len(), 43);
    }
}
