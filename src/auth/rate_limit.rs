//! Per-client-IP token buckets for the login endpoints.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets that have refilled are forgotten once the map grows past this, so a flood of
/// distinct addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub struct LoginLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl LoginLimiter {
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self { burst: f64::from(burst), per_sec, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `ip`; false when the bucket is empty.
    pub fn try_acquire(&self, ip: IpAddr) -> bool {
        self.try_acquire_at(ip, Instant::now())
    }

    fn try_acquire_at(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let (burst, rate) = (self.burst, self.per_sec);
            map.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if map.len() >= MAX_TRACKED {
                // Still full of active attackers: refuse new addresses rather than grow.
                return false;
            }
        }
        let (tokens, at) = map.entry(ip).or_insert((self.burst, now));
        let refilled = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            true
        } else {
            *tokens = refilled;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let l = LoginLimiter::new(3, 1.0);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t0 = Instant::now();
        assert!(l.try_acquire_at(ip, t0));
        assert!(l.try_acquire_at(ip, t0));
        assert!(l.try_acquire_at(ip, t0));
        assert!(!l.try_acquire_at(ip, t0));
        assert!(l.try_acquire_at([10, 0, 0, 2].into(), t0), "other clients are unaffected");
        assert!(!l.try_acquire_at(ip, t0 + Duration::from_millis(500)));
        assert!(l.try_acquire_at(ip, t0 + Duration::from_millis(1600)));
    }
}
