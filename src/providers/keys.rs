//! The API keys of one LLM provider: used in turn (round-robin), and a key the provider refused
//! with 429 (rate limited) or 401 (not accepted) rests for a while — it "cools down" — for as long
//! as the answer's `Retry-After` (or `retry-after-ms`) says, else for a default.
//!
//! Choosing a key never fails: when every key is cooling down, the one whose rest ends first is
//! offered with how long it still has to rest, and the caller decides (see `llm.rs`: a fallback
//! is asked instead, a retry waits a little or gives up). A key's secret never leaves this module
//! except into the `Authorization` header; logs name a key by its position only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use secrecy::SecretString;

/// The longest rest a `Retry-After` can impose.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(600);
/// A 429 without `Retry-After`.
pub const DEFAULT_COOLDOWN_429: Duration = Duration::from_secs(10);
/// A 401 without `Retry-After`: a refused key rarely starts working by itself.
pub const DEFAULT_COOLDOWN_401: Duration = Duration::from_secs(300);

/// The keys of one provider and when each may be used again.
pub struct KeyRing {
    /// One `None` when the provider has no key (its 429s still make it rest).
    keys: Vec<Option<SecretString>>,
    /// Per key: until when it rests.
    resting: Mutex<Vec<Option<Instant>>>,
    next: AtomicUsize,
}

/// The key to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    /// Set when every key is cooling down: how long this one (the first to be ready) still rests.
    pub cooling_for: Option<Duration>,
}

impl KeyRing {
    pub fn new(keys: Vec<SecretString>) -> Self {
        let keys: Vec<Option<SecretString>> =
            if keys.is_empty() { vec![None] } else { keys.into_iter().map(Some).collect() };
        let resting = Mutex::new(vec![None; keys.len()]);
        Self { keys, resting, next: AtomicUsize::new(0) }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The secret of key `index` (`None` for a provider without a key).
    pub fn secret(&self, index: usize) -> Option<&SecretString> {
        self.keys.get(index).and_then(Option::as_ref)
    }

    /// The next key in turn that is not cooling down; when all are, the one that is ready first.
    pub fn pick(&self, now: Instant) -> Pick {
        let n = self.keys.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let resting = self.resting.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = |i: usize| resting[i].is_none_or(|until| until <= now);
        if let Some(index) = (0..n).map(|k| (start + k) % n).find(|&i| ready(i)) {
            return Pick { index, cooling_for: None };
        }
        let (index, until) = resting
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.map(|u| (i, u)))
            .min_by_key(|&(_, u)| u)
            .unwrap_or((start, now));
        Pick { index, cooling_for: Some(until.saturating_duration_since(now)) }
    }

    /// Rests key `index` for `rest` (never shortening a longer rest already running).
    pub fn cool_down(&self, index: usize, rest: Duration, now: Instant) {
        let mut resting = self.resting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = resting.get_mut(index) {
            let until = now + rest.min(MAX_COOLDOWN);
            *slot = Some(slot.map_or(until, |u| u.max(until)));
        }
    }

    /// Key `index` was just accepted: whatever rest it had is over.
    pub fn succeeded(&self, index: usize) {
        let mut resting = self.resting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = resting.get_mut(index) {
            *slot = None;
        }
    }
}

/// How long a key rests after an answer with this status: `Retry-After` for 429 and 401 (capped
/// at [`MAX_COOLDOWN`]), else the default; other statuses say nothing about the key.
pub fn cooldown(status: u16, retry_after: Option<Duration>) -> Option<Duration> {
    let default = match status {
        429 => DEFAULT_COOLDOWN_429,
        401 => DEFAULT_COOLDOWN_401,
        _ => return None,
    };
    Some(retry_after.unwrap_or(default).min(MAX_COOLDOWN))
}

/// The wait an answer asks for: `retry-after-ms` (milliseconds, as OpenAI sends it), else
/// `Retry-After` as seconds or an HTTP date. Unreadable values are ignored.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).and_then(secs_f64(1e-3)) {
        return Some(ms);
    }
    parse_retry_after(text("retry-after")?, now)
}

/// `Retry-After`: delay-seconds (a fraction is accepted) or an HTTP date (a past one is no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return secs_f64(1.0)(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A non-negative finite number of `unit` seconds as a duration, capped at [`MAX_COOLDOWN`].
fn secs_f64(unit: f64) -> impl Fn(f64) -> Option<Duration> {
    move |v| {
        let secs = v * unit;
        (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_COOLDOWN.as_secs_f64())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        KeyRing::new((0..n).map(|i| SecretString::from(format!("k{i}"))).collect())
    }

    #[test]
    fn keys_take_turns_and_a_cooling_key_is_passed_over() {
        let (r, now) = (ring(3), Instant::now());
        let picks: Vec<usize> = (0..6).map(|_| r.pick(now).index).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        r.cool_down(1, Duration::from_secs(30), now);
        let picks: Vec<usize> = (0..4).map(|_| r.pick(now).index).collect();
        assert_eq!(picks, [0, 2, 2, 0], "key 1 is skipped while it rests");
        // Its rest over, it is back in turn.
        let later = now + Duration::from_secs(31);
        assert!((0..3).map(|_| r.pick(later)).any(|p| p.index == 1 && p.cooling_for.is_none()));
    }

    #[test]
    fn when_every_key_rests_the_first_ready_is_offered_with_its_wait() {
        let (r, now) = (ring(2), Instant::now());
        r.cool_down(0, Duration::from_secs(30), now);
        r.cool_down(1, Duration::from_secs(5), now);
        assert_eq!(r.pick(now), Pick { index: 1, cooling_for: Some(Duration::from_secs(5)) });
        // A shorter rest never shortens a longer one; success ends it.
        r.cool_down(0, Duration::from_secs(1), now);
        r.succeeded(1);
        assert_eq!(r.pick(now), Pick { index: 1, cooling_for: None });
        let anonymous = KeyRing::new(Vec::new());
        assert_eq!((anonymous.len(), anonymous.secret(0).is_none()), (1, true));
        anonymous.cool_down(0, Duration::from_secs(3600), now);
        assert_eq!(anonymous.pick(now).cooling_for, Some(MAX_COOLDOWN), "capped");
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("86400", now), Some(MAX_COOLDOWN));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(42)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        for bad in ["", "-3", "soon", "NaN", "inf"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "20".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(20)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)), "the finer one wins");
        assert_eq!(cooldown(429, None), Some(DEFAULT_COOLDOWN_429));
        assert_eq!(cooldown(401, Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        assert_eq!(cooldown(500, Some(Duration::from_secs(2))), None);
    }
}
