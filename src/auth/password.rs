//! Dashboard password hashing (argon2id, PHC strings) and generation of the first password.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// URL-safe characters without look-alikes, for generated passwords.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";

/// A PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$…`.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    crate::util::fill_random(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Constant-time verification against a PHC string; a malformed hash never verifies.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

pub fn is_phc_hash(s: &str) -> bool {
    s.starts_with("$argon2")
}

/// 24 random characters from the OS RNG.
pub fn generate_password() -> String {
    let mut bytes = [0u8; 24];
    crate::util::fill_random(&mut bytes);
    // 256 is not a multiple of the alphabet size; the bias (< 1%) is irrelevant at 24 chars of ~5.8 bits.
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("Correct Horse").unwrap_or_default();
        assert!(is_phc_hash(&h));
        assert!(verify_password("Correct Horse", &h));
        assert!(!verify_password("correct horse", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_eq!(generate_password().len(), 24);
    }
}
