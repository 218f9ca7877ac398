//! Prometheus metrics: one registry for the process, filled only once [`install`]ed (the app does
//! that at start when `[metrics] listen` is set; `http/metrics.rs` serves it on that address).
//!
//! Before [`install`], every counter and histogram function is one atomic load and a return, so a
//! server without `[metrics]` pays nothing on its hot paths. The two gauges (runs active,
//! WebSockets open) are always kept — one atomic add per run or socket — so that they are right
//! whenever the registry is installed, whatever ran before.
//!
//! The registry is the process's, not an app's: its recording points are deep in the domain (the
//! run registry, the pipeline, the provider clients, the login limiter), and [`upstream_error`]
//! and [`rate_limited`] are called from code that holds no state of ours. Several apps in one
//! process (the integration tests) therefore share it, and each one's listener renders all of it.
//!
//! Labels are bounded sets and never secrets: route templates (never raw paths; [`UNMATCHED`]
//! when no route matched), HTTP methods (`other` beyond the standard ones), status codes, the
//! configured provider ids, the configured models (a model no configuration names is `other`, so a
//! client cannot grow the registry), and fixed words. No key, token, user or session is a label.
//!
//! This module imports nothing of ours: every layer may record into it.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s text: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `route` of a request that matched no route (static files of the WebUI, 404s).
pub const UNMATCHED: &str = "unmatched";

/// A model the configuration does not name, as the `model` label shows it.
pub const OTHER_MODEL: &str = "other";

/// The front door a turn came through (the `door` label of `astrgate_chat_first_token_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    /// `POST /api/v1/chat`.
    SseChat,
    /// `POST /api/chat/send` (AstrBot's older dashboard chat).
    LegacyChat,
    /// The ChatUI's regenerate (and the legacy one).
    ChatUi,
    /// `/api/v1/chat/ws`.
    ChatWs,
    /// Chat mode (`ct: "chat"`) of the Live / unified sockets.
    UnifiedWs,
    /// A Live voice turn.
    Live,
    /// `POST /v1/conversation`.
    Conversation,
    /// `POST /chat` (the stage API).
    Stage,
    /// `POST /v1/chat/completions`.
    OpenAi,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::SseChat => "sse_chat",
            Door::LegacyChat => "legacy_chat",
            Door::ChatUi => "chatui",
            Door::ChatWs => "chat_ws",
            Door::UnifiedWs => "unified_ws",
            Door::Live => "live",
            Door::Conversation => "conversation",
            Door::Stage => "stage",
            Door::OpenAi => "openai",
        }
    }
}

/// A stage of a Live turn (the `stage` label of `astrgate_live_stage_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStage {
    /// Speech recognition of an utterance.
    Stt,
    /// From the start of hearing (STT, or a text input) to the model's first words.
    FirstToken,
    /// From the start of hearing to the first spoken sentence sent.
    FirstAudio,
}

impl LiveStage {
    fn as_str(self) -> &'static str {
        match self {
            LiveStage::Stt => "stt",
            LiveStage::FirstToken => "first_token",
            LiveStage::FirstAudio => "first_audio",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoorLabels {
    door: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    provider: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request handling: 1 ms to 10 s.
fn request_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Model and speech latencies: 50 ms to 60 s.
fn model_buckets() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0])
}

struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<RouteLabels>,
    first_token: Histograms<DoorLabels>,
    tokens: Family<TokenLabels, Counter>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    live_stage: Histograms<StageLabels>,
    rate_limited: Family<ReasonLabels, Counter>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static RUNS_ACTIVE: LazyLock<Gauge> = LazyLock::new(Gauge::default);
static WEBSOCKETS_OPEN: LazyLock<Family<EndpointLabels, Gauge>> = LazyLock::new(Family::default);

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(request_buckets),
            first_token: Family::new_with_constructor(model_buckets),
            tokens: Family::default(),
            upstream_errors: Family::default(),
            live_stage: Family::new_with_constructor(model_buckets),
            rate_limited: Family::default(),
        };
        let mut r = Registry::default();
        // Counters are registered without `_total`: the encoder appends it.
        r.register(
            "astrgate_http_requests",
            "HTTP requests answered, by route template, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "astrgate_http_request_duration_seconds",
            "Time to the response head (for a stream, its start), by route template and method",
            m.http_duration.clone(),
        );
        r.register(
            "astrgate_chat_first_token_seconds",
            "Time from a turn's start to the model's first token, by front door",
            m.first_token.clone(),
        );
        r.register(
            "astrgate_llm_tokens",
            "Tokens the providers reported, by provider, model and kind",
            m.tokens.clone(),
        );
        r.register(
            "astrgate_upstream_errors",
            "Failed provider requests (LLM, STT, TTS), by provider and kind of failure",
            m.upstream_errors.clone(),
        );
        r.register(
            "astrgate_runs_active",
            "Runs and stateless requests active, counted against runs.max_active",
            RUNS_ACTIVE.clone(),
        );
        r.register("astrgate_websockets_open", "WebSockets open, by endpoint template", WEBSOCKETS_OPEN.clone());
        r.register(
            "astrgate_live_stage_seconds",
            "Live turn stages: stt, first_token and first_audio (from the start of hearing)",
            m.live_stage.clone(),
        );
        r.register("astrgate_rate_limited", "Requests refused by a limit, by reason", m.rate_limited.clone());
        Metrics { registry: r, ..m }
    }
}

/// Starts recording (idempotent: every app of the process shares the one registry).
pub fn install() {
    METRICS.get_or_init(Metrics::new);
}

/// True once [`install`]ed.
pub fn enabled() -> bool {
    METRICS.get().is_some()
}

fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Every metric in the Prometheus text format; `None` before [`install`].
pub fn render() -> Option<String> {
    let m = get()?;
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry).ok()?;
    Some(out)
}

/// The `method` label: the standard methods by name, anything else `other`.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// One answered request: `route` is the route template ([`UNMATCHED`] when none matched),
/// `elapsed` the time to its response head.
pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let Some(m) = get() else { return };
    let method = method_label(method);
    let route = route.to_string();
    m.http_duration.get_or_create(&RouteLabels { route: route.clone(), method }).observe(elapsed.as_secs_f64());
    m.http_requests.get_or_create(&HttpLabels { route, method, status }).inc();
}

/// The model's first token of a turn, `elapsed` after the turn started.
pub fn first_token(door: Door, elapsed: Duration) {
    if let Some(m) = get() {
        m.first_token.get_or_create(&DoorLabels { door: door.as_str() }).observe(elapsed.as_secs_f64());
    }
}

/// Tokens a provider reported for one request. `model` must be a configured model or
/// [`OTHER_MODEL`] (the agent decides which).
pub fn tokens(provider: &str, model: &str, prompt: u64, completion: u64) {
    let Some(m) = get() else { return };
    for (kind, n) in [("prompt", prompt), ("completion", completion)] {
        let labels = TokenLabels { provider: provider.to_string(), model: model.to_string(), kind };
        m.tokens.get_or_create(&labels).inc_by(n);
    }
}

/// A failed request to a provider: `provider` is its configured id (or the STT/TTS provider's
/// type), `kind` the class of failure (`connect`, `timeout`, `http_4xx`, `http_5xx`, `protocol`…).
pub fn upstream_error(provider: &str, kind: &str) {
    if let Some(m) = get() {
        m.upstream_errors
            .get_or_create(&UpstreamLabels { provider: provider.to_string(), kind: kind.to_string() })
            .inc();
    }
}

/// A request refused by a limit: `login` (the login limiter), `max_active` (`[runs] max_active`),
/// and the per-key limits' `rate`, `concurrency`, `tokens`.
pub fn rate_limited(reason: &str) {
    if let Some(m) = get() {
        m.rate_limited.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }
}

/// One stage of a Live turn took `elapsed`.
pub fn live_stage(stage: LiveStage, elapsed: Duration) {
    if let Some(m) = get() {
        m.live_stage.get_or_create(&StageLabels { stage: stage.as_str() }).observe(elapsed.as_secs_f64());
    }
}

/// `delta` runs (or stateless requests) became active (negative: ended).
pub fn runs_active(delta: i64) {
    RUNS_ACTIVE.inc_by(delta);
}

/// Held for as long as a WebSocket is open: counted in `astrgate_websockets_open{endpoint}`.
#[derive(Debug)]
pub struct SocketOpen(Gauge);

impl SocketOpen {
    /// `endpoint` is the route template (`/api/v1/live/ws`).
    pub fn new(endpoint: &str) -> SocketOpen {
        let g = WEBSOCKETS_OPEN.get_or_create(&EndpointLabels { endpoint: endpoint.to_string() }).clone();
        g.inc();
        SocketOpen(g)
    }
}

impl Drop for SocketOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` in `text` (labels as rendered, in order).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn recorded_values_render_in_the_text_format() {
        install();
        assert!(enabled());
        http_request("/unit/{id}", "GET", 200, Duration::from_millis(3));
        http_request("/unit/{id}", "BREW", 418, Duration::from_millis(3));
        tokens("unit-provider", "unit-model", 7, 5);
        upstream_error("unit-provider", "timeout");
        rate_limited("unit");
        first_token(Door::Stage, Duration::from_millis(120));
        live_stage(LiveStage::Stt, Duration::from_millis(300));
        let open = SocketOpen::new("/unit/ws");
        runs_active(1);
        let text = render().unwrap();
        let got = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} missing in\n{text}"));
        assert!(got(r#"astrgate_http_requests_total{route="/unit/{id}",method="GET",status="200"}"#) >= 1.0);
        assert!(got(r#"astrgate_http_requests_total{route="/unit/{id}",method="other",status="418"}"#) >= 1.0);
        assert!(
            got(r#"astrgate_http_request_duration_seconds_bucket{route="/unit/{id}",method="GET",le="0.005"}"#) >= 1.0
        );
        assert!(got(r#"astrgate_llm_tokens_total{provider="unit-provider",model="unit-model",kind="prompt"}"#) >= 7.0);
        assert!(
            got(r#"astrgate_llm_tokens_total{provider="unit-provider",model="unit-model",kind="completion"}"#) >= 5.0
        );
        assert!(got(r#"astrgate_upstream_errors_total{provider="unit-provider",kind="timeout"}"#) >= 1.0);
        assert!(got(r#"astrgate_rate_limited_total{reason="unit"}"#) >= 1.0);
        assert!(got(r#"astrgate_chat_first_token_seconds_bucket{door="stage",le="0.25"}"#) >= 1.0);
        assert!(got(r#"astrgate_live_stage_seconds_count{stage="stt"}"#) >= 1.0);
        assert!(got(r#"astrgate_websockets_open{endpoint="/unit/ws"}"#) >= 1.0);
        assert!(text.contains("# TYPE astrgate_runs_active gauge"));
        assert!(text.contains("# TYPE astrgate_http_request_duration_seconds histogram"));
        assert!(text.contains("# TYPE astrgate_http_requests_total counter"));
        drop(open);
        runs_active(-1);
        let text = render().unwrap();
        assert_eq!(sample(&text, r#"astrgate_websockets_open{endpoint="/unit/ws"}"#), Some(0.0));
    }

    /// The Grafana dashboard is valid JSON, queries only series we render, and shows every family.
    #[test]
    fn the_grafana_dashboard_queries_these_metrics() {
        install();
        http_request("/dash", "GET", 200, Duration::ZERO);
        first_token(Door::Live, Duration::ZERO);
        tokens("dash", "dash", 1, 1);
        upstream_error("dash", "connect");
        rate_limited("dash");
        live_stage(LiveStage::FirstAudio, Duration::ZERO);
        let _open = SocketOpen::new("/dash/ws");
        let text = render().unwrap();
        let rendered: std::collections::BTreeSet<&str> =
            text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
        let dash: serde_json::Value = serde_json::from_str(include_str!("../docs/grafana-dashboard.json")).unwrap();
        let exprs: Vec<&str> = dash["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap())
            .map(|t| t["expr"].as_str().unwrap())
            .collect();
        let mut used = std::collections::BTreeSet::new();
        for e in &exprs {
            for name in
                e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("astrgate_"))
            {
                assert!(rendered.contains(name), "the dashboard queries {name}, which is not rendered");
                used.insert(name.trim_end_matches("_bucket").trim_end_matches("_total").to_string());
            }
        }
        for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()) {
            assert!(used.contains(family.trim_end_matches("_total")), "the dashboard does not show {family}");
        }
    }

    #[test]
    fn methods_are_a_bounded_set() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PROPFIND"), "other");
        assert_eq!(method_label("get"), "other");
    }
}
