//! Bearer tokens for the HTTP API.
//!
//! A token is `cis_` followed by 64 hex digits of OS randomness. It is shown once, when it is
//! created; the store keeps only its blake3 hash and its [`Scope`], in the append-only journal [`JOURNAL`]:
//! key `name ‖ 0x00 ‖ 0x00` holds the creation record and `name ‖ 0x00 ‖ 0x01` the revocation
//! record (JSON, see [`TokenRecord`]). Nothing is ever overwritten: revoking adds a record, and
//! a name, once used, cannot be created again.
//!
//! The server checks a request's token against [`TokenCache`]: a blake3 hash and a map lookup.
//! The cache is rebuilt from the journal when this process created or revoked a token on the
//! same store since it was built (a generation counter kept beside the store, see
//! [`Store::companion`]), and on a miss at most once a second. No other process can write the
//! journal while the server runs: the store directory is locked by its one opener.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use cis_storage::{hex, unhex32, StorageError, Store};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use cis_core::time;

pub const JOURNAL: &str = "api_tokens";
pub const PREFIX: &str = "cis_";
const CREATED: u8 = 0;
const REVOKED: u8 = 1;
/// Longest bearer token considered at all (a real one is 68 bytes).
pub const MAX_TOKEN_LEN: usize = 256;

/// What this process knows of one store's token journal: kept beside the store, so two stores
/// in one process never see each other's writes.
#[derive(Default)]
struct Journal {
    /// Bumped after every create or revoke on the store: caches built before are stale.
    generation: AtomicU64,
    /// Serialises create/revoke on the store (check-then-write on the journal).
    writer: Mutex<()>,
}

fn generation(store: &Store) -> u64 {
    store.companion::<Journal>().generation.load(Ordering::SeqCst)
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token name '{0}' is not allowed: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("a token named '{0}' already exists (names are never reused, even after revocation)")]
    Exists(String),
    #[error("no token named '{0}'")]
    Unknown(String),
    #[error("token '{0}' is already revoked")]
    AlreadyRevoked(String),
    #[error("token journal record is malformed: {0}")]
    Record(String),
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a token may do. A read token gets the data routes; an admin token also runs jobs and
/// manages tokens (`/admin/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Tokens created before scopes existed have no `scope` field and are read tokens.
    #[default]
    Read,
    Admin,
}

impl cis_core::Choice for Scope {
    const CHOICES: &'static [Scope] = &[Scope::Read, Scope::Admin];

    /// The same lower-case names as the serialised form.
    fn choice_name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TokenRecord {
    Created {
        name: String,
        /// blake3 of the token text, hex.
        token_blake3: String,
        created_at: String,
        #[serde(default)]
        scope: Scope,
    },
    Revoked {
        name: String,
        revoked_at: String,
    },
}

/// What is known about a token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub token_blake3: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub scope: Scope,
}

impl TokenInfo {
    pub fn active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadName(name.to_string()))
    }
}

fn key(name: &str, record: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 2);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.push(record);
    k
}

/// The blake3 hash under which a token is stored and looked up.
pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Every token ever created, by name, with its revocation if any.
pub fn list(store: &Store) -> Result<Vec<TokenInfo>, TokenError> {
    let mut by_name: BTreeMap<String, TokenInfo> = BTreeMap::new();
    let mut revoked: Vec<(String, String)> = Vec::new();
    store.journal_visit(JOURNAL, &[], |_, v| {
        match serde_json::from_slice::<TokenRecord>(v).map_err(|e| TokenError::Record(e.to_string()))? {
            TokenRecord::Created {
                name,
                token_blake3,
                created_at,
                scope,
            } => {
                by_name.insert(
                    name.clone(),
                    TokenInfo {
                        name,
                        token_blake3,
                        created_at,
                        revoked_at: None,
                        scope,
                    },
                );
            }
            TokenRecord::Revoked { name, revoked_at } => revoked.push((name, revoked_at)),
        }
        Ok::<_, TokenError>(ControlFlow::Continue(()))
    })?;
    for (name, at) in revoked {
        if let Some(t) = by_name.get_mut(&name) {
            t.revoked_at = Some(at);
        }
    }
    Ok(by_name.into_values().collect())
}

fn find(store: &Store, name: &str) -> Result<Option<TokenInfo>, TokenError> {
    Ok(list(store)?.into_iter().find(|t| t.name == name))
}

fn put(store: &Store, k: &[u8], record: &TokenRecord) -> Result<(), TokenError> {
    let bytes = serde_json::to_vec(record).map_err(|e| TokenError::Record(e.to_string()))?;
    store.journal_put(JOURNAL, k, &bytes)?;
    store.flush()?;
    store.companion::<Journal>().generation.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Creates a read token named `name` and returns its text: the only time it is ever available.
/// Only its blake3 hash is stored. Durable on return.
pub fn create(store: &Store, name: &str) -> Result<String, TokenError> {
    create_scoped(store, name, Scope::Read)
}

/// [`create`] with the token's scope.
pub fn create_scoped(store: &Store, name: &str, scope: Scope) -> Result<String, TokenError> {
    check_name(name)?;
    let journal = store.companion::<Journal>();
    let _guard = journal.writer.lock().unwrap_or_else(|p| p.into_inner());
    if find(store, name)?.is_some() {
        return Err(TokenError::Exists(name.to_string()));
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| TokenError::Random(e.to_string()))?;
    let token = format!("{PREFIX}{}", hex(&secret));
    let record = TokenRecord::Created {
        name: name.to_string(),
        token_blake3: hex(&token_hash(&token)),
        created_at: time::format(time::now()),
        scope,
    };
    put(store, &key(name, CREATED), &record)?;
    Ok(token)
}

/// Revokes the token named `name` (an appended record). Durable on return.
pub fn revoke(store: &Store, name: &str) -> Result<(), TokenError> {
    check_name(name)?;
    let journal = store.companion::<Journal>();
    let _guard = journal.writer.lock().unwrap_or_else(|p| p.into_inner());
    let info = find(store, name)?.ok_or_else(|| TokenError::Unknown(name.to_string()))?;
    if !info.active() {
        return Err(TokenError::AlreadyRevoked(name.to_string()));
    }
    let record = TokenRecord::Revoked {
        name: name.to_string(),
        revoked_at: time::format(time::now()),
    };
    put(store, &key(name, REVOKED), &record)
}

/// What the cache says about a token hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Active; the token's name and scope.
    Valid(String, Scope),
    Invalid,
    /// The cache must be refreshed from the journal before answering.
    Stale,
}

struct Valid {
    generation: u64,
    loaded: Option<Instant>,
    by_hash: HashMap<[u8; 32], (String, Scope)>,
}

/// Active token hashes, in memory.
pub struct TokenCache {
    inner: RwLock<Valid>,
    /// Shortest interval between two refreshes caused by unknown tokens.
    miss_refresh: Duration,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            inner: RwLock::new(Valid {
                generation: u64::MAX,
                loaded: None,
                by_hash: HashMap::new(),
            }),
            miss_refresh: Duration::from_secs(1),
        }
    }
}

impl TokenCache {
    /// Answers from memory only: `store` is asked for its journal's generation, not read.
    pub fn lookup(&self, store: &Store, hash: &[u8; 32]) -> Lookup {
        let v = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if v.generation != generation(store) {
            return Lookup::Stale;
        }
        match v.by_hash.get(hash) {
            Some((name, scope)) => Lookup::Valid(name.clone(), *scope),
            None if v.loaded.is_some_and(|t| t.elapsed() < self.miss_refresh) => Lookup::Invalid,
            None => Lookup::Stale,
        }
    }

    /// Rebuilds the cache from the journal (a scan of a few records).
    pub fn refresh(&self, store: &Store) -> Result<(), TokenError> {
        let generation = generation(store);
        let mut by_hash = HashMap::new();
        for t in list(store)?.into_iter().filter(TokenInfo::active) {
            let h = unhex32(&t.token_blake3)
                .ok_or_else(|| TokenError::Record(format!("token '{}' has a malformed hash", t.name)))?;
            by_hash.insert(h, (t.name, t.scope));
        }
        let mut v = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *v = Valid {
            generation,
            loaded: Some(Instant::now()),
            by_hash,
        };
        Ok(())
    }

    /// Looks up, refreshing from the store when the cache is stale. Blocking (store access).
    pub fn check(&self, store: &Store, token: &str) -> Result<Option<(String, Scope)>, TokenError> {
        self.check_hash(store, &token_hash(token))
    }

    /// [`TokenCache::check`] by the token's hash (what a dashboard session keeps).
    pub fn check_hash(&self, store: &Store, h: &[u8; 32]) -> Result<Option<(String, Scope)>, TokenError> {
        // A second pass only when a token was created or revoked during the first refresh.
        for _ in 0..2 {
            match self.lookup(store, h) {
                Lookup::Valid(name, scope) => return Ok(Some((name, scope))),
                Lookup::Invalid => return Ok(None),
                Lookup::Stale => self.refresh(store)?,
            }
        }
        Ok(match self.lookup(store, h) {
            Lookup::Valid(name, scope) => Some((name, scope)),
            Lookup::Invalid | Lookup::Stale => None,
        })
    }
}
