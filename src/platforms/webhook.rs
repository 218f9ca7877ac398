//! Outbound webhooks: a proactive message is POSTed as JSON, signed with HMAC-SHA256 over
//! `"<timestamp>.<body>"` (`X-Astrgate-Signature: sha256=<hex>`, `X-Astrgate-Timestamp`), and
//! retried with exponential backoff on connection errors, timeouts, 429 and 5xx. The same
//! `X-Astrgate-Delivery` id is sent on every attempt so receivers can deduplicate.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

use crate::config::PlatformConfig;

pub struct Webhook {
    pub id: String,
    url: String,
    secret: Option<SecretString>,
    max_attempts: u32,
    client: reqwest::Client,
    /// First retry delay; doubles each attempt.
    pub backoff: Duration,
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn new(cfg: &PlatformConfig) -> Result<Self, reqwest::Error> {
        Ok(Self {
            id: cfg.id.clone(),
            url: cfg.url.clone(),
            secret: cfg.secret.clone(),
            max_attempts: cfg.max_attempts,
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(cfg.timeout_secs))
                .build()?,
            backoff: Duration::from_millis(200),
        })
    }

    /// Delivers `payload`; on final failure returns the reason.
    pub async fn deliver(&self, payload: &Value) -> Result<(), String> {
        let body = payload.to_string();
        let delivery = uuid::Uuid::new_v4().to_string();
        let mut last_err = String::new();
        for attempt in 0..self.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt - 1)).await;
            }
            let ts = chrono::Utc::now().timestamp();
            let mut rb = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header("user-agent", concat!("astrgate/", env!("CARGO_PKG_VERSION")))
                .header("x-astrgate-delivery", &delivery)
                .header("x-astrgate-timestamp", ts.to_string())
                .body(body.clone());
            if let Some(s) = &self.secret {
                rb = rb.header("x-astrgate-signature", signature(s.expose_secret().as_bytes(), ts, body.as_bytes()));
            }
            match rb.send().await {
                Ok(res) if res.status().is_success() => return Ok(()),
                Ok(res) => {
                    let status = res.status();
                    last_err = format!("webhook answered HTTP {}", status.as_u16());
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        break;
                    }
                }
                Err(e) => last_err = format!("webhook unreachable: {}", e.without_url()),
            }
            tracing::warn!(platform = %self.id, attempt = attempt + 1, error = %last_err, "webhook delivery failed");
        }
        Err(last_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_and_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            signature(b"s3cret", 1_700_000_000, b"{}"),
            "sha256=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
        );
    }
}
