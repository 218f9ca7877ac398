//! HS256 dashboard tokens `{username, exp, tv}`: AstrBot's claims (no `sub`, no `iat`) plus a
//! token version `tv` that [`crate::auth::dashboard::DashboardAuth`] checks, so that changing the
//! password invalidates every token issued before. Unlike AstrBot, `exp` is required.
//!
//! Only HS256 is needed, so this is a small HMAC-SHA256 implementation instead of a general
//! JOSE library (which would pull RSA and EC stacks into the build). The header's `alg` must be
//! HS256, which rules out `none` and algorithm-confusion tokens; the signature is compared in
//! constant time and checked before any claim is trusted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Valid signature, `exp` in the past.
    Expired,
    /// Valid signature, but no non-empty string `username`.
    NoUsername,
    /// Valid signature, but not acceptable: no `exp`, or a token version that is no longer
    /// current (the password changed).
    Rejected,
    /// Anything else: malformed, wrong algorithm, bad signature.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub username: String,
    /// Seconds since the epoch. Required: a token that never expires is refused.
    pub exp: i64,
    /// The token version it was issued under.
    pub tv: Option<String>,
    /// What the token may be used for (`use`); absent on login tokens, which are good for
    /// everything. `socket` tokens open the `?token=` WebSockets and nothing else.
    pub purpose: Option<String>,
}

#[derive(Clone)]
pub struct JwtKeys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        Self { secret: secret.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }

    /// Signs arbitrary claims (tests use this to mint odd tokens).
    pub fn encode_claims(&self, claims: &Value) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    pub fn encode(&self, username: &str, exp: i64) -> String {
        self.encode_claims(&json!({"username": username, "exp": exp}))
    }

    /// A token carrying the token version `tv`.
    pub fn encode_versioned(&self, username: &str, exp: i64, tv: &str) -> String {
        self.encode_claims(&json!({"username": username, "exp": exp, "tv": tv}))
    }

    /// A token carrying the token version `tv`, restricted to `purpose` (the `use` claim).
    pub fn encode_for(&self, username: &str, exp: i64, tv: &str, purpose: &str) -> String {
        self.encode_claims(&json!({"username": username, "exp": exp, "tv": tv, "use": purpose}))
    }

    /// A keyed digest of `parts`, hex: derives token versions that cannot be forged or reversed
    /// without the secret.
    pub fn digest(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.mac();
        for p in parts {
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p);
        }
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    pub fn decode(&self, token: &str, now_secs: i64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Invalid);
        };
        let header: Value =
            B64.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(JwtError::Invalid)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(JwtError::Invalid);
        }
        let sig = B64.decode(s).map_err(|_| JwtError::Invalid)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| JwtError::Invalid)?;
        let payload: Value =
            B64.decode(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(JwtError::Invalid)?;
        let exp = payload.get("exp").and_then(Value::as_f64).ok_or(JwtError::Rejected)? as i64;
        if now_secs >= exp {
            return Err(JwtError::Expired);
        }
        let tv = payload.get("tv").and_then(Value::as_str).map(str::to_string);
        let purpose = match payload.get("use") {
            None => None,
            Some(Value::String(p)) => Some(p.clone()),
            // A `use` we cannot read restricts the token to nothing we know.
            Some(_) => return Err(JwtError::Rejected),
        };
        match payload.get("username").and_then(Value::as_str) {
            Some(u) if !u.is_empty() => Ok(Claims { username: u.to_string(), exp, tv, purpose }),
            _ => Err(JwtError::NoUsername),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let k = JwtKeys::new(b"secret");
        let t = k.encode("alice", 1000);
        assert_eq!(k.decode(&t, 999), Ok(Claims { username: "alice".into(), exp: 1000, tv: None, purpose: None }));
        let v = k.encode_versioned("alice", 1000, "abc");
        assert_eq!(k.decode(&v, 0).map(|c| c.tv), Ok(Some("abc".into())));
        assert_eq!(k.decode(&t, 1000), Err(JwtError::Expired));
        assert_eq!(JwtKeys::new(b"other").decode(&t, 0), Err(JwtError::Invalid));
    }

    #[test]
    fn rejects_alg_none_and_tampering() {
        let k = JwtKeys::new(b"secret");
        let body = B64.encode(r#"{"username":"admin"}"#);
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), body);
        assert_eq!(k.decode(&none, 0), Err(JwtError::Invalid));
        let t = k.encode("alice", 10_000);
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = &body;
        assert_eq!(k.decode(&parts.join("."), 0), Err(JwtError::Invalid));
        assert_eq!(k.decode("abc", 0), Err(JwtError::Invalid));
    }

    #[test]
    fn exp_and_username_are_required() {
        let k = JwtKeys::new(b"s");
        assert_eq!(k.decode(&k.encode_claims(&json!({"username": "bob"})), 0), Err(JwtError::Rejected));
        assert_eq!(k.decode(&k.encode_claims(&json!({"username": "", "exp": 10})), 0), Err(JwtError::NoUsername));
        assert_eq!(k.decode(&k.encode_claims(&json!({"sub": "bob", "exp": 10})), 0), Err(JwtError::NoUsername));
    }

    #[test]
    fn purpose_is_read_and_an_unreadable_one_refused() {
        let k = JwtKeys::new(b"s");
        let t = k.encode_for("bob", 10, "v", "socket");
        assert_eq!(k.decode(&t, 0).map(|c| c.purpose), Ok(Some("socket".into())));
        let odd = k.encode_claims(&json!({"username": "bob", "exp": 10, "use": ["socket"]}));
        assert_eq!(k.decode(&odd, 0), Err(JwtError::Rejected));
    }
}
