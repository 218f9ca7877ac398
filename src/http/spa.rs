//! Serving a built single-page dashboard (`[dashboard] webui_dir`, e.g. AstrBot's WebUI) at `/`.
//! Without one, `/` redirects to astrgate's own console (`console.rs`, always at `/console/`).
//! This is the router's fallback, so every API route wins. API-looking paths that matched no
//! route stay JSON 404s; other GETs get the file if it exists, else `index.html` for a
//! client-side route (a path whose last segment has no extension). Files are read by
//! tower-http's `ServeDir`, which refuses `..` and answers Range and conditional requests.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::app::AppState;
use crate::error::ApiError;

/// The policy for pages we serve: scripts, styles and fonts from this origin only (inline styles
/// and `data:` fonts and images, which Vue builds use), media and downloads from `blob:`, no
/// framing, no plugins, connections to this origin only.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' blob: data:; connect-src 'self'; \
     object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'";

/// Paths that belong to the APIs: never answered with a page.
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path.starts_with("/v1/") || path == "/healthz"
}

pub async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some(dir) = state.config.dashboard.webui_dir.clone().filter(|_| !is_api(&path)) else {
        // Without a WebUI, `/` is astrgate's own console (which always lives at `/console/`).
        if path == "/" && matches!(*req.method(), Method::GET | Method::HEAD) {
            return Redirect::temporary(super::console::BASE).into_response();
        }
        return ApiError::new(StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return ApiError::new(StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    let (parts, _) = req.into_parts();
    let again = || {
        let mut r = Request::new(Body::empty());
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = parts.uri.clone();
        *r.headers_mut() = parts.headers.clone();
        r
    };
    let index = dir.join("index.html");
    let res = match ServeDir::new(&dir).oneshot(again()).await {
        Ok(res) => res.map(Body::new),
        Err(e) => match e {},
    };
    let client_route = !path.rsplit('/').next().unwrap_or_default().contains('.');
    let (res, page) = if res.status() == StatusCode::NOT_FOUND && client_route {
        match ServeFile::new(&index).oneshot(again()).await {
            Ok(r) => (r.map(Body::new), true),
            Err(e) => match e {},
        }
    } else {
        let page = path.ends_with('/') || path.ends_with(".html");
        (res, page)
    };
    if res.status() == StatusCode::NOT_FOUND {
        return ApiError::new(StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    with_page_headers(res, page)
}

/// The headers every served file of the WebUI carries; pages are never cached (they name the
/// hashed assets of the current build), other files are revalidated.
pub fn with_page_headers(res: Response, page: bool) -> Response {
    with_security_headers(res, PAGE_CSP, if page { "no-store" } else { "no-cache" })
}

/// The headers of every page and file we serve, the WebUI's and the console's alike: no
/// sniffing, no framing, no referrer, this content security policy and cache policy.
pub fn with_security_headers(mut res: Response, csp: &'static str, cache: &'static str) -> Response {
    let h = res.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    res
}
