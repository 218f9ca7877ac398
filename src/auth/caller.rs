//! Who is calling, and the middleware that decides it.
//!
//! `/api/v1` credentials are read as AstrBot reads them (notes §4.1): an `Authorization: Bearer`
//! header, when present, is the only carrier (a dashboard JWT, else tried as an API key);
//! otherwise the first of `Authorization: ApiKey`, `?api_key`, `?key`, `X-API-Key`; otherwise the
//! dashboard cookie. Unknown, expired and revoked keys all answer `Invalid API key`.
//!
//! Deny by default: handlers take [`Caller`] as an extractor, and it only exists in the request
//! after [`require_scope`] or [`require_dashboard`] authorised it. A route mounted without one of
//! those layers therefore rejects every caller with 403.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use super::api_key::ApiKeys;
use super::dashboard::DashboardAuth;
use super::jwt::JwtError;
use super::{Scope, api_key, texts};
use crate::error::ApiError;

/// What authentication needs, and nothing more (the middleware gets it from the app's state
/// through `FromRef`).
#[derive(Clone)]
pub struct AuthState {
    pub keys: Arc<ApiKeys>,
    pub dashboard: Arc<DashboardAuth>,
    /// `[server] trust_forwarded_for`.
    pub trust_forwarded_for: bool,
    /// `[compat] require_api_key`.
    pub compat_requires_key: bool,
    /// Per-key limits and usage.
    pub governor: crate::governance::Governor,
}

/// Why a request cannot act as the username it names (AstrBot's texts; the binding is ours).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("Missing key: username")]
    Missing,
    #[error("username is empty")]
    Empty,
    #[error("username is too long (max {MAX_USERNAME_CHARS} characters)")]
    TooLong,
    #[error("Invalid request body: username must be a string")]
    NotAString,
    /// A key bound to a username named another one (403).
    #[error("This API key is bound to another username")]
    BoundToAnother,
    /// A key without `chat:admin` named the dashboard administrator (AstrBot's text; 403).
    #[error("username is reserved for an AstrBot administrator")]
    Reserved,
}

const MAX_USERNAME_CHARS: usize = 255;

pub const COOKIE_NAME: &str = "astrbot_dashboard_jwt";

/// An authenticated, authorised caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Dashboard JWT: full access, acting as `username` unless a request names another user.
    Dashboard { username: String },
    /// An API key; acts for whichever `username` the request names, or only for `username`
    /// when the key is bound to one. Without `chat:admin` it may not act as `reserved` (the
    /// dashboard administrator's username).
    ApiKey {
        key_id: String,
        scopes: Vec<Scope>,
        username: Option<String>,
        reserved: Option<String>,
        /// The key's limits as of this request.
        limits: crate::store::Limits,
    },
}

/// The key id of compat callers when `[compat] require_api_key = false`: no key, so nothing is
/// limited or counted.
pub const ANONYMOUS_KEY: &str = "compat";

impl Caller {
    pub fn is_dashboard(&self) -> bool {
        matches!(self, Caller::Dashboard { .. })
    }

    pub fn dashboard_username(&self) -> Option<&str> {
        match self {
            Caller::Dashboard { username } => Some(username),
            Caller::ApiKey { .. } => None,
        }
    }

    /// The key whose limits and usage this caller's requests count against; `None` for the
    /// dashboard and anonymous compat callers.
    pub fn account(&self) -> Option<(&str, &crate::store::Limits)> {
        match self {
            Caller::ApiKey { key_id, limits, .. } if key_id != ANONYMOUS_KEY => Some((key_id, limits)),
            _ => None,
        }
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Caller::Dashboard { .. } => true,
            Caller::ApiKey { scopes, .. } => scopes.contains(&scope),
        }
    }

    /// The owner recorded on attachments this caller uploads or generates.
    pub fn owner_tag(&self) -> String {
        match self {
            Caller::Dashboard { username } => format!("user:{username}"),
            Caller::ApiKey { key_id, .. } => format!("key:{key_id}"),
        }
    }

    /// Whether this caller may use (download, send to a model, attach) an attachment owned by
    /// `owner`: the dashboard may use every attachment, a key only its own. Attachments stored
    /// before owners were recorded (`None`) stay usable as before.
    pub fn may_use_attachment(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Dashboard { .. } => true,
            Caller::ApiKey { key_id, .. } => {
                owner.is_none_or(|o| o.strip_prefix("key:").is_some_and(|id| id == key_id))
            }
        }
    }

    /// The username this request acts as. An API-key caller must name one (AstrBot's texts); a
    /// dashboard JWT acts as its own user unless it names another. A key bound to a username acts
    /// as that user when the request names nobody, and may name no other.
    pub fn act_as(&self, provided: Option<&Value>) -> Result<String, UserError> {
        let named = match provided {
            None | Some(Value::Null) => match self {
                Caller::Dashboard { username } => username.clone(),
                Caller::ApiKey { username: Some(bound), .. } => bound.clone(),
                Caller::ApiKey { .. } => return Err(UserError::Missing),
            },
            Some(Value::String(s)) => {
                let u = s.trim();
                if u.is_empty() {
                    return Err(UserError::Empty);
                }
                if u.chars().count() > MAX_USERNAME_CHARS {
                    return Err(UserError::TooLong);
                }
                u.to_string()
            }
            Some(_) => return Err(UserError::NotAString),
        };
        match self {
            Caller::ApiKey { username: Some(bound), .. } if &named != bound => Err(UserError::BoundToAnother),
            Caller::ApiKey { reserved: Some(admin), .. } if &named == admin => Err(UserError::Reserved),
            _ => Ok(named),
        }
    }

    /// A short label for logs and audit fields (`api_key:<id>` as AstrBot, or the dashboard user).
    pub fn label(&self) -> String {
        match self {
            Caller::Dashboard { username } => username.clone(),
            Caller::ApiKey { key_id, .. } => format!("api_key:{key_id}"),
        }
    }
}

/// Marker inserted only by the authorising middlewares.
#[derive(Clone)]
struct Authorized(Caller);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authorized>()
            .map(|a| a.0.clone())
            .ok_or_else(|| ApiError::forbidden(texts::INSUFFICIENT_SCOPE))
    }
}

/// What a route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Scope(Scope),
    /// Dashboard JWT only (API-key management): API keys get 403 without being looked up.
    Dashboard,
    /// Any valid key, whatever its scopes (or a dashboard JWT).
    AnyKey,
}

/// Why a request was not authorised, before a front door shows it (AstrBot's texts as
/// `Display`; [`ApiError`] is the envelope's rendering, other front doors map the variants).
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("{}", texts::MISSING_API_KEY)]
    Missing,
    /// Unknown, expired or revoked key.
    #[error("{}", texts::INVALID_API_KEY)]
    InvalidKey,
    #[error("{}", texts::TOKEN_EXPIRED)]
    TokenExpired,
    #[error("{}", texts::INVALID_TOKEN)]
    InvalidToken,
    #[error("{}", texts::INSUFFICIENT_SCOPE)]
    InsufficientScope,
    /// The key's `requests_per_minute`.
    #[error(transparent)]
    Limited(crate::governance::Exceeded),
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<AuthFailure> for ApiError {
    fn from(e: AuthFailure) -> Self {
        match e {
            AuthFailure::InsufficientScope => ApiError::forbidden(e.to_string()),
            AuthFailure::Limited(x) => ApiError::too_many(x.to_string(), x.retry_after_secs()),
            AuthFailure::Store(e) => ApiError::store(e),
            _ => ApiError::unauthorized(e.to_string()),
        }
    }
}

/// A credential found on the request, before it is checked.
#[derive(Debug, PartialEq, Eq)]
enum Credential<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
    Cookie(&'a str),
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Value of the first `name=` pair in a raw query string.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn find_credential<'a>(
    headers: &'a HeaderMap,
    query: &'a Option<(Option<String>, Option<String>)>,
) -> Option<Credential<'a>> {
    let auth = header_str(headers, "authorization").map(str::trim);
    if let Some(a) = auth
        && let Some(t) = a.strip_prefix("Bearer ")
    {
        // A Bearer header hides every other carrier, as in AstrBot.
        return Some(Credential::Bearer(t.trim()));
    }
    if let Some(a) = auth
        && let Some(k) = a.strip_prefix("ApiKey ")
    {
        return Some(Credential::ApiKey(k.trim()));
    }
    if let Some((api_key, key)) = query {
        if let Some(k) = api_key {
            return Some(Credential::ApiKey(k.as_str()));
        }
        if let Some(k) = key {
            return Some(Credential::ApiKey(k.as_str()));
        }
    }
    if let Some(k) = header_str(headers, "x-api-key") {
        return Some(Credential::ApiKey(k.trim()));
    }
    cookie(headers, COOKIE_NAME).map(Credential::Cookie)
}

/// Authenticates and authorises an `/api/v1` request (HTTP or WebSocket upgrade).
pub async fn authenticate(
    state: &AuthState,
    headers: &HeaderMap,
    query: Option<&str>,
    req: Requirement,
) -> Result<Caller, ApiError> {
    Ok(authorize(state, headers, query, req).await?)
}

/// [`authenticate`] with the failure typed, for front doors that show it in their own shape.
pub async fn authorize(
    state: &AuthState,
    headers: &HeaderMap,
    query: Option<&str>,
    req: Requirement,
) -> Result<Caller, AuthFailure> {
    let q = Some((query_param(query, "api_key"), query_param(query, "key")));
    let Some(cred) = find_credential(headers, &q) else {
        return Err(AuthFailure::Missing);
    };
    match cred {
        Credential::ApiKey(raw) => check_key(state, raw, req).await,
        Credential::Bearer(token) => match state.dashboard.decode(token) {
            Ok(c) => Ok(Caller::Dashboard { username: c.username }),
            Err(JwtError::Expired) => Err(AuthFailure::TokenExpired),
            // Ours, but naming nobody: AstrBot's `Invalid token`, not a retry as an API key.
            Err(JwtError::NoUsername | JwtError::Rejected) => Err(AuthFailure::InvalidToken),
            // Not a JWT of ours: `Authorization: Bearer abk_…` is an API key.
            Err(JwtError::Invalid) => check_key(state, token, req).await,
        },
        Credential::Cookie(token) => match state.dashboard.decode(token) {
            Ok(c) => Ok(Caller::Dashboard { username: c.username }),
            Err(JwtError::Expired) => Err(AuthFailure::TokenExpired),
            Err(JwtError::Invalid | JwtError::NoUsername | JwtError::Rejected) => Err(AuthFailure::InvalidToken),
        },
    }
}

async fn check_key(state: &AuthState, raw: &str, req: Requirement) -> Result<Caller, AuthFailure> {
    let scope = match req {
        // Key management is never open to API keys, whatever the key.
        Requirement::Dashboard => return Err(AuthFailure::InsufficientScope),
        Requirement::Scope(s) => Some(s),
        Requirement::AnyKey => None,
    };
    let Some(rec) = state.keys.verify(raw).await? else {
        return Err(AuthFailure::InvalidKey);
    };
    let scopes = api_key::granted_scopes(&rec);
    if scope.is_some_and(|s| !scopes.contains(&s)) {
        return Err(AuthFailure::InsufficientScope);
    }
    let reserved = (!scopes.contains(&Scope::ChatAdmin)).then(|| state.dashboard.username());
    if let Err(e) = state.governor.admit_request(&rec.key_id, &rec.limits).await {
        return Err(AuthFailure::Limited(e));
    }
    Ok(Caller::ApiKey { key_id: rec.key_id, scopes, username: rec.username, reserved, limits: rec.limits })
}

/// True when the dashboard cookie is the credential this request would be authenticated by.
fn uses_cookie(headers: &HeaderMap, query: Option<&str>) -> bool {
    let q = Some((query_param(query, "api_key"), query_param(query, "key")));
    matches!(find_credential(headers, &q), Some(Credential::Cookie(_)))
}

/// Cross-site request forgery guard for requests authenticated by the dashboard cookie.
///
/// A browser attaches the cookie to requests that other pages make — including pages on another
/// port of the same host, which `SameSite` treats as the same site. So a state-changing request
/// carried by the cookie must come from our own origin: `Sec-Fetch-Site` (when sent) must be
/// `same-origin` or `none`, `Origin` (when sent) must name the host the request was sent to, and
/// a body must be JSON (multipart for uploads): `text/plain` and form bodies, which any page can
/// send without a CORS preflight, are refused with 415. Reads (GET/HEAD) are not checked, except
/// AstrBot's one deleting GET (`/api/chat/delete_session`).
pub fn check_cookie_request(req: &Request, trust_forwarded: bool) -> Result<(), ApiError> {
    use axum::http::{Method, StatusCode, header};
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && !MUTATING_GETS.contains(&req.uri().path())
    {
        return Ok(());
    }
    let h = req.headers();
    let cross_site = || ApiError::forbidden("Cross-site request refused");
    if let Some(site) = header_str(h, "sec-fetch-site")
        && !matches!(site.trim(), "same-origin" | "none")
    {
        return Err(cross_site());
    }
    if let Some(origin) = header_str(h, "origin") {
        let authority = origin.trim().split_once("://").map(|(_, a)| a.trim_end_matches('/'));
        let host = header_str(h, "host");
        let fwd = if trust_forwarded { header_str(h, "x-forwarded-host") } else { None };
        let same =
            authority.is_some_and(|a| [host, fwd].into_iter().flatten().any(|hh| hh.trim().eq_ignore_ascii_case(a)));
        if !same {
            return Err(cross_site());
        }
    }
    let has_body =
        header_str(h, "content-length").is_some_and(|l| l.trim() != "0") || h.contains_key(header::TRANSFER_ENCODING);
    if has_body {
        let ct = header_str(h, "content-type").unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let upload = UPLOAD_PATHS.contains(&req.uri().path()) && essence == "multipart/form-data";
        if essence != "application/json" && !upload {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type: requests authenticated by the dashboard cookie must send application/json",
            ));
        }
    }
    Ok(())
}

/// The routes that take a multipart upload.
const UPLOAD_PATHS: [&str; 3] = ["/api/v1/file", "/api/v1/files", "/api/chat/post_file"];

/// GET routes that change state (AstrBot's legacy design), checked like a POST.
const MUTATING_GETS: [&str; 1] = ["/api/chat/delete_session"];

/// Route layer for scoped `/api/v1` routes.
pub async fn require_scope(
    State((state, req_kind)): State<(AuthState, Requirement)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if uses_cookie(req.headers(), req.uri().query()) {
        check_cookie_request(&req, state.trust_forwarded_for)?;
    }
    let caller = authenticate(&state, req.headers(), req.uri().query(), req_kind).await?;
    tracing::Span::current().record("caller", tracing::field::display(caller.label()));
    req.extensions_mut().insert(Authorized(caller));
    Ok(next.run(req).await)
}

/// A route layer that shows refusals in its front door's own shape (the OpenAI-compatible
/// routes). The dashboard cookie is not a credential here: these routes are for programs, and
/// a browser page of another origin could otherwise spend the cookie on them.
#[derive(Clone)]
pub struct Guard {
    pub auth: AuthState,
    pub requirement: Requirement,
    pub reject: fn(AuthFailure) -> Response,
}

pub async fn require_guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let mut headers = req.headers().clone();
    headers.remove(axum::http::header::COOKIE);
    match authorize(&g.auth, &headers, req.uri().query(), g.requirement).await {
        Ok(caller) => {
            tracing::Span::current().record("caller", tracing::field::display(caller.label()));
            req.extensions_mut().insert(Authorized(caller));
            next.run(req).await
        }
        Err(e) => (g.reject)(e),
    }
}

/// The dashboard token a request carries: the Bearer header, else the cookie (`true`).
pub fn dashboard_token(headers: &HeaderMap) -> Option<(&str, bool)> {
    let bearer = header_str(headers, "authorization").and_then(|a| a.trim().strip_prefix("Bearer ")).map(str::trim);
    match bearer {
        Some(t) => Some((t, false)),
        None => cookie(headers, COOKIE_NAME).map(|c| (c, true)),
    }
}

/// Route layer for the non-v1 dashboard routes (`/api/apikey/*`): JWT from Bearer or cookie, with
/// AstrBot's dashboard texts.
pub async fn require_dashboard(
    State(state): State<AuthState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let bearer = header_str(headers, "authorization").and_then(|a| a.trim().strip_prefix("Bearer ")).map(str::trim);
    if bearer.is_none() && cookie(headers, COOKIE_NAME).is_some() {
        check_cookie_request(&req, state.trust_forwarded_for)?;
    }
    let headers = req.headers();
    let token = bearer.or_else(|| cookie(headers, COOKIE_NAME));
    let Some(token) = token else {
        return Err(ApiError::unauthorized(texts::DASH_UNAUTHORIZED));
    };
    let caller = match state.dashboard.decode(token) {
        Ok(c) => Caller::Dashboard { username: c.username },
        Err(JwtError::Expired) => return Err(ApiError::unauthorized(texts::DASH_TOKEN_EXPIRED)),
        Err(JwtError::Invalid | JwtError::NoUsername | JwtError::Rejected) => {
            return Err(ApiError::unauthorized(texts::DASH_TOKEN_INVALID));
        }
    };
    req.extensions_mut().insert(Authorized(caller));
    Ok(next.run(req).await)
}

/// Route layer for the compat APIs (`/v1/conversation`, stage `/chat`…): an API key with scope
/// `chat` (or a dashboard JWT), unless `[compat] require_api_key = false`, meant for loopback
/// deployments, in which case callers act as the anonymous key `compat`.
pub async fn require_compat(
    State(state): State<AuthState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = if state.compat_requires_key {
        if uses_cookie(req.headers(), req.uri().query()) {
            check_cookie_request(&req, state.trust_forwarded_for)?;
        }
        authenticate(&state, req.headers(), req.uri().query(), Requirement::Scope(Scope::Chat)).await?
    } else {
        Caller::ApiKey {
            key_id: ANONYMOUS_KEY.into(),
            scopes: vec![Scope::Chat],
            username: None,
            reserved: None,
            limits: Default::default(),
        }
    };
    req.extensions_mut().insert(Authorized(caller));
    Ok(next.run(req).await)
}

/// The client address used for rate limiting.
pub fn client_ip(headers: &HeaderMap, connect: Option<&ConnectInfo<SocketAddr>>, trust_forwarded_for: bool) -> IpAddr {
    // The rightmost entry is the one our (single, trusted) proxy appended; entries to its left
    // come from the client and can be forged.
    if trust_forwarded_for
        && let Some(ip) = header_str(headers, "x-forwarded-for")
            .and_then(|v| v.rsplit(',').next())
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
    {
        return ip;
    }
    connect.map(|c| c.0.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn carrier_order_follows_astrbot() {
        let none = Some((None, None));
        let q = Some((Some("q1".to_string()), Some("q2".to_string())));
        let h = headers(&[("authorization", "ApiKey a1"), ("x-api-key", "x1")]);
        assert_eq!(find_credential(&h, &q), Some(Credential::ApiKey("a1")));
        let h = headers(&[("x-api-key", "x1")]);
        assert_eq!(find_credential(&h, &q), Some(Credential::ApiKey("q1")));
        let q2 = Some((None, Some("q2".to_string())));
        assert_eq!(find_credential(&h, &q2), Some(Credential::ApiKey("q2")));
        assert_eq!(find_credential(&h, &none), Some(Credential::ApiKey("x1")));
        // Bearer hides the other carriers.
        let h = headers(&[("authorization", "Bearer t"), ("x-api-key", "x1")]);
        assert_eq!(find_credential(&h, &q), Some(Credential::Bearer("t")));
        let h = headers(&[("cookie", "a=b; astrbot_dashboard_jwt=jjj")]);
        assert_eq!(find_credential(&h, &none), Some(Credential::Cookie("jjj")));
        assert_eq!(find_credential(&HeaderMap::new(), &none), None);
    }
}
