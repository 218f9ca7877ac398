//! Dashboard password hashing (argon2id, PHC strings), the bounded verifier pool, and
//! generation of the first password.
//!
//! argon2id needs its whole memory cost (19 MiB by default) for every verification. Running each
//! login on the blocking pool let a flood of wrong passwords allocate that much per request, in
//! hundreds of threads whose allocator arenas kept it afterwards (300 parallel logins: 5.7 GB).
//! [`VerifierPool`] instead runs verifications on a few dedicated threads, each of which owns one
//! reusable memory buffer, and admits only a few waiters: memory is fixed at
//! `threads × memory cost`, whatever the load, and excess logins are refused quickly.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Semaphore, oneshot};

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
    verify_with(&mut Vec::new(), password, phc)
}

/// Verifies with `memory` as argon2's working memory, grown once to the hash's memory cost and
/// then reused.
fn verify_with(memory: &mut Vec<Block>, password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else { return false };
    let Ok(params) = Params::try_from(&hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else { return false };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    if argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks]).is_err() {
        return false;
    }
    // `Output` compares in constant time.
    Output::new(&out).is_ok_and(|o| o == expected)
}

struct Job {
    password: String,
    phc: Arc<str>,
    reply: oneshot::Sender<bool>,
}

/// Why a verification did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Every verifier was busy and the queue full for longer than the admission wait.
    #[error("password verification is busy")]
    Busy,
}

/// A fixed set of verifier threads with a bounded queue (see the module docs).
pub struct VerifierPool {
    jobs: SyncSender<Job>,
    admission: Semaphore,
    wait: Duration,
}

impl VerifierPool {
    /// `threads` verifiers; at most `threads × 2` logins are admitted at once, and a login waits
    /// at most `wait` for admission.
    pub fn new(threads: usize, wait: Duration) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let admitted = threads * 2;
        let (jobs, rx) = sync_channel::<Job>(admitted);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || worker(&rx))?;
        }
        Ok(Self { jobs, admission: Semaphore::new(admitted), wait })
    }

    /// Verifies `password` against `phc` on a verifier thread.
    pub async fn verify(&self, password: &str, phc: Arc<str>) -> Result<bool, VerifyError> {
        let permit = match tokio::time::timeout(self.wait, self.admission.acquire()).await {
            Ok(Ok(p)) => p,
            _ => return Err(VerifyError::Busy),
        };
        let (reply, rx) = oneshot::channel();
        // Never blocks: the channel holds as many jobs as there are permits.
        if self.jobs.try_send(Job { password: password.to_string(), phc, reply }).is_err() {
            return Err(VerifyError::Busy);
        }
        let ok = rx.await.unwrap_or(false);
        drop(permit);
        Ok(ok)
    }
}

/// One verifier thread: runs until the pool is dropped.
fn worker(rx: &Mutex<Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let ok = verify_with(&mut memory, &job.password, &job.phc);
        let _ = job.reply.send(ok);
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

    #[tokio::test]
    async fn the_pool_verifies_and_refuses_when_saturated() {
        let h: Arc<str> = hash_password("pw").unwrap_or_default().into();
        let pool = VerifierPool::new(1, Duration::from_millis(1)).unwrap();
        assert_eq!(pool.verify("pw", h.clone()).await, Ok(true));
        assert_eq!(pool.verify("nope", h.clone()).await, Ok(false));
        // Two admitted at once for one thread; the rest are refused after the short wait.
        let results = futures_util::future::join_all((0..6).map(|_| pool.verify("nope", h.clone()))).await;
        assert!(results.contains(&Err(VerifyError::Busy)), "{results:?}");
        assert!(results.contains(&Ok(false)), "{results:?}");
    }
}
