//! API keys: `abk_` + 43 URL-safe characters from the OS RNG, stored only as SHA-256.
//!
//! SHA-256 rather than AstrBot's PBKDF2 (100k rounds): the key carries 256 bits of entropy, so a
//! slow hash adds nothing against guessing and costs tens of milliseconds on every request.
//! Verified keys are cached for `cache_ttl`; `last_used_at` is collected in memory and written in
//! one batch per flush interval instead of a database write per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

use super::Scope;
use crate::store::{ApiKeyRecord, Micros, Store, StoreResult, now_micros};

pub const KEY_PREFIX: &str = "abk_";
/// Length of the raw key: 4 + 43.
pub const KEY_LEN: usize = 47;
/// Characters of the raw key shown in listings.
pub const DISPLAY_PREFIX_LEN: usize = 12;
/// Positive-cache bound; the cache is cleared when it is reached.
const CACHE_MAX: usize = 10_000;

/// A fresh raw key.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    crate::util::fill_random(&mut bytes);
    format!("{KEY_PREFIX}{}", B64.encode(bytes))
}

pub fn hash(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// Cheap shape check so garbage never reaches the database.
pub fn looks_like_key(raw: &str) -> bool {
    raw.len() == KEY_LEN
        && raw.starts_with(KEY_PREFIX)
        && raw[KEY_PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The key service: verification with a small cache, batched `last_used_at`, creation.
pub struct ApiKeys {
    store: Arc<dyn Store>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (ApiKeyRecord, Instant)>>,
    touches: Mutex<HashMap<String, Micros>>,
    /// Cluster mode: revocations reach the other instances' caches at once.
    shared: Option<Arc<dyn super::Shared>>,
}

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self { store, ttl, cache: Mutex::new(HashMap::new()), touches: Mutex::new(HashMap::new()), shared: None }
    }

    /// Tells the other instances of a cluster when a key is revoked or deleted.
    pub fn with_shared(mut self, shared: Option<Arc<dyn super::Shared>>) -> Self {
        self.shared = shared;
        self
    }

    /// Forgets every cached key (after a gap in the notices from other instances).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Returns the active key for `raw`, or `None` for unknown, revoked and expired keys alike.
    pub async fn verify(&self, raw: &str) -> StoreResult<Option<ApiKeyRecord>> {
        if !looks_like_key(raw) {
            return Ok(None);
        }
        let h = hash(raw);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(&h).filter(|(_, at)| at.elapsed() < self.ttl).map(|(r, _)| r.clone())
        };
        let rec = match cached {
            Some(r) => Some(r),
            None => {
                let found = self.store.find_api_key_by_hash(&h).await?;
                if let Some(r) = &found {
                    let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(h, (r.clone(), Instant::now()));
                }
                found
            }
        };
        let now = now_micros();
        let Some(rec) = rec.filter(|r| r.is_active(now)) else {
            return Ok(None);
        };
        self.touches.lock().unwrap_or_else(|p| p.into_inner()).insert(rec.key_id.clone(), now);
        Ok(Some(rec))
    }

    /// Drops a key from the cache so revocation takes effect at once on this instance.
    pub fn invalidate(&self, key_id: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (r, _)| r.key_id != key_id);
    }

    /// Writes the collected `last_used_at` values in one transaction.
    pub async fn flush_touches(&self) -> StoreResult<()> {
        let batch: Vec<(String, Micros)> = {
            let mut t = self.touches.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *t).into_iter().collect()
        };
        if let Err(e) = self.store.touch_api_keys(&batch).await {
            // Put them back so the next flush retries.
            let mut t = self.touches.lock().unwrap_or_else(|p| p.into_inner());
            for (k, v) in batch {
                let e = t.entry(k).or_insert(v);
                *e = (*e).max(v);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Creates and stores a key; returns the record and the raw key (shown once).
    pub async fn create(
        &self,
        name: &str,
        scopes: &[Scope],
        expires_in_days: Option<i64>,
        username: Option<&str>,
        limits: crate::store::Limits,
        created_by: &str,
    ) -> StoreResult<(ApiKeyRecord, String)> {
        let raw = generate();
        let now = now_micros();
        let rec = ApiKeyRecord {
            key_id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            key_hash: hash(&raw),
            key_prefix: raw[..DISPLAY_PREFIX_LEN].to_string(),
            scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
            created_by: created_by.to_string(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
            expires_at: expires_in_days.map(|d| now.saturating_add(d.saturating_mul(86_400_000_000))),
            revoked_at: None,
            username: username.map(str::to_string),
            limits,
        };
        self.store.insert_api_key(&rec).await?;
        Ok((rec, raw))
    }

    pub async fn revoke(&self, key_id: &str) -> StoreResult<bool> {
        let ok = self.store.revoke_api_key(key_id, now_micros()).await?;
        self.changed(key_id).await;
        Ok(ok)
    }

    /// Changes a key's name or limits; `None` when there is no such key. Takes effect at once
    /// here and, through the cluster's notice, on the other instances.
    pub async fn update(&self, key_id: &str, update: &crate::store::KeyUpdate) -> StoreResult<Option<ApiKeyRecord>> {
        if !self.store.update_api_key(key_id, update, now_micros()).await? {
            return Ok(None);
        }
        self.changed(key_id).await;
        self.store.get_api_key(key_id).await
    }

    pub async fn delete(&self, key_id: &str) -> StoreResult<bool> {
        let ok = self.store.delete_api_key(key_id).await?;
        self.changed(key_id).await;
        Ok(ok)
    }

    async fn changed(&self, key_id: &str) {
        self.invalidate(key_id);
        if let Some(s) = &self.shared {
            s.key_changed(key_id).await;
        }
    }

    /// One key by id, revoked and expired ones included.
    pub async fn get(&self, key_id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.store.get_api_key(key_id).await
    }

    /// All keys, newest first, with pending `last_used_at` values written first.
    pub async fn list(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        self.flush_touches().await?;
        self.store.list_api_keys().await
    }
}

/// The scopes a stored key grants: its own (AstrBot's default list when it has none) and what
/// they include. Unknown names grant nothing.
pub fn granted_scopes(rec: &ApiKeyRecord) -> Vec<Scope> {
    let mut s: Vec<Scope> = rec.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
    if rec.scopes.is_empty() {
        s = Scope::DEFAULT.to_vec();
    }
    for scope in s.clone() {
        for inc in scope.includes() {
            if !s.contains(inc) {
                s.push(*inc);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape() {
        let k = generate();
        assert_eq!(k.len(), KEY_LEN);
        assert!(looks_like_key(&k));
        assert!(!looks_like_key("abk_short"));
        assert!(!looks_like_key(&k.replacen("abk_", "xyz_", 1)));
        assert_ne!(generate(), generate());
        assert_eq!(hash("x").len(), 64);
    }
}
