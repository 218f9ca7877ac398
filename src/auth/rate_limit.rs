//! Token buckets for the login endpoints: one per client address, and one global budget of
//! failed logins (an attacker with many addresses still gets only so many guesses a minute).

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

    /// (burst, refill per second).
    pub fn rates(&self) -> (f64, f64) {
        (self.burst, self.per_sec)
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

/// A single token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug)]
pub struct Budget {
    burst: f64,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self { burst: f64::from(burst), per_sec, state: Mutex::new((f64::from(burst), Instant::now())) }
    }

    fn refill(&self, now: Instant) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.per_sec).min(self.burst);
        s.1 = now;
        s
    }

    /// (burst, refill per second).
    pub fn rates(&self) -> (f64, f64) {
        (self.burst, self.per_sec)
    }

    /// Takes one token; false when none is left.
    pub fn try_take(&self) -> bool {
        let mut s = self.refill(Instant::now());
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives a token back (the attempt it was reserved for did not fail).
    pub fn refund(&self) {
        let mut s = self.refill(Instant::now());
        s.0 = (s.0 + 1.0).min(self.burst);
    }

    /// Seconds until a token is available again.
    pub fn retry_after_secs(&self) -> u64 {
        let s = self.refill(Instant::now());
        if s.0 >= 1.0 { 0 } else { ((1.0 - s.0) / self.per_sec).ceil().max(1.0) as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_budget_is_spent_then_refills() {
        let b = Budget::new(2, 1000.0);
        assert!(b.try_take() && b.try_take());
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.try_take());
        let slow = Budget::new(1, 0.5);
        assert!(slow.try_take());
        assert!(!slow.try_take());
        assert_eq!(slow.retry_after_secs(), 2);
        slow.refund();
        assert!(slow.try_take());
    }

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
