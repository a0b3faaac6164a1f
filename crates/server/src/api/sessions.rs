//! Browser sessions for the dashboard, so that a token never travels in a URL.
//!
//! A browser signs in once by posting its token; the server keeps, in memory and per
//! [`crate::api::AppState`] (two servers in one process share nothing), the token's *hash*
//! and an expiry under the blake3 hash of a random session id, and the browser keeps the id in
//! an `HttpOnly; SameSite=Strict` cookie. Every request re-checks that the token is still
//! active, so revoking it ends its sessions; a restart ends them all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cis_storage::hex;
use rand::RngCore;

use crate::api::tokens::TokenError;

/// The cookie holding the session id.
pub const COOKIE: &str = "cis_session";
/// The cookie's path: the dashboard's routes, nothing else.
pub const PATH: &str = "/dashboard";
/// Default lifetime of a session.
pub const DEFAULT_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept; signing in beyond it drops the one closest to expiry. Only holders of
/// an active token can sign in, but a script of theirs must not grow memory without bound.
pub const MAX_SESSIONS: usize = 4096;

struct Session {
    token_hash: [u8; 32],
    expires: Instant,
}

/// The sessions of one server.
pub struct Sessions {
    ttl: Duration,
    by_id_hash: Mutex<HashMap<[u8; 32], Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(DEFAULT_TTL)
    }
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            by_id_hash: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for the token with `token_hash` (already checked to be active);
    /// returns the session id for the cookie: 32 bytes of OS randomness, hex.
    pub fn start(&self, token_hash: [u8; 32]) -> Result<String, TokenError> {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|e| TokenError::Random(e.to_string()))?;
        let id = hex(&secret);
        let now = Instant::now();
        let mut map = self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            id_hash(&id),
            Session {
                token_hash,
                expires: now + self.ttl,
            },
        );
        Ok(id)
    }

    /// The token hash of the live session `id`; `None` when it is unknown or expired (then it
    /// is forgotten).
    pub fn token_of(&self, id: &str) -> Option<[u8; 32]> {
        let key = id_hash(id);
        let mut map = self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.token_hash),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends session `id` (sign-out, or its token found revoked).
    pub fn end(&self, id: &str) {
        let mut map = self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&id_hash(id));
    }

    /// Sessions held, expired ones included until they are next touched.
    pub fn len(&self) -> usize {
        self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `Set-Cookie` value that stores session `id` in the browser for the session's life
    /// (in whole seconds, rounded up: `Max-Age=0` would delete it).
    pub fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path={PATH}; Max-Age={}",
            self.ttl.as_millis().div_ceil(1000)
        )
    }
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn removal_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path={PATH}; Max-Age=0")
}

/// The session id in a `Cookie` header value, if any.
pub fn from_cookie_header(value: &str) -> Option<&str> {
    value
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, id)| id.trim())
        .filter(|id| !id.is_empty())
}

/// Kept hashed so that the map (a heap dump, a debug print) holds no usable session id.
fn id_hash(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_it_expires_or_ends() {
        let sessions = Sessions::new(Duration::from_millis(200));
        let id = sessions.start([7; 32]).expect("start");
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.token_of(&id), Some([7; 32]));
        assert_eq!(sessions.token_of("not-a-session"), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(sessions.token_of(&id), None, "expired");
        assert!(sessions.is_empty(), "an expired session is forgotten once touched");
        let id = sessions.start([8; 32]).expect("start");
        sessions.end(&id);
        assert_eq!(sessions.token_of(&id), None, "ended");
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        let first = sessions.start([1; 32]).expect("start");
        for _ in 0..MAX_SESSIONS {
            sessions.start([2; 32]).expect("start");
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert_eq!(sessions.token_of(&first), None, "the one closest to expiry was dropped");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_the_dashboard() {
        let sessions = Sessions::new(Duration::from_secs(3600));
        assert_eq!(
            sessions.cookie("abc"),
            "cis_session=abc; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age=3600"
        );
        assert_eq!(from_cookie_header("a=1; cis_session=abc ; b=2"), Some("abc"));
        assert_eq!(from_cookie_header("cis_session=; b=2"), None);
        assert_eq!(from_cookie_header("xcis_session=abc"), None);
    }
}
