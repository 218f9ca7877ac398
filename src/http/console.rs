//! The web console (`console/` in the repository): plain HTML, CSS and JavaScript modules embedded
//! in the binary at compile time and served under `/console/`, and at `/` by a redirect when no
//! `[dashboard] webui_dir` owns `/` (see `spa.rs`).
//!
//! This file only serves bytes: the console is a client of the same HTTP API as every other
//! client, authenticated by the dashboard's HttpOnly cookie, so nothing here reads or grants any
//! credential, and no API route is weakened for it. Every answer carries the page headers of
//! `spa.rs` with the console's own, stricter policy: scripts, styles and connections from this
//! origin only, no inline script or style at all.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::spa::with_security_headers;
use crate::error::ApiError;

/// Where the console lives.
pub const BASE: &str = "/console/";

/// The console's Content-Security-Policy: everything from this origin, nothing inline (neither
/// script nor style), images and audio also from `blob:`/`data:` (attachments and spoken
/// replies are played from memory), connections (fetch, the Live WebSocket) to this origin only,
/// never framed.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     media-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; worker-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// The microphone for the Voice page, and nothing else a page could ask for.
const PERMISSIONS_POLICY: &str = "microphone=(self), camera=(), geolocation=(), payment=(), usb=()";

struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
    etag: u64,
}

/// FNV-1a over the file, at compile time: the ETag changes whenever the file does.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

macro_rules! asset {
    ($path:literal, $mime:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $path));
        Asset { path: $path, mime: $mime, body: BODY, etag: fnv1a(BODY) }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. A file not listed here is not served (and a test checks that every
/// file under `console/` is listed, and that every file the pages reference exists).
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/api.js", JS),
    asset!("js/audit.js", JS),
    asset!("js/chat.js", JS),
    asset!("js/chat-run.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/keys.js", JS),
    asset!("js/login.js", JS),
    asset!("js/main.js", JS),
    asset!("js/markdown.js", JS),
    asset!("js/pcm-worklet.js", JS),
    asset!("js/sse.js", JS),
    asset!("js/usage.js", JS),
    asset!("js/voice.js", JS),
    asset!("js/voice-audio.js", JS),
];

/// `GET /console` → `/console/` (the page's relative URLs need the slash).
pub async fn redirect() -> Response {
    Redirect::permanent(BASE).into_response()
}

/// `GET /console/`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /console/{*path}`: a file of the console, or a JSON 404.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::not_found("Not Found").into_response();
    };
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.mime)], asset.body).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res.headers_mut().insert("permissions-policy", HeaderValue::from_static(PERMISSIONS_POLICY));
    res.headers_mut().insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    res.headers_mut().insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    // The page is never cached (it is tiny and names the current scripts); the other files are
    // revalidated by ETag, so a new build is picked up at once.
    let page = path == "index.html";
    with_security_headers(res, CONSOLE_CSP, if page { "no-store" } else { "no-cache" })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `console/`, relative to it.
    fn files_on_disk() -> Vec<String> {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }

    #[test]
    fn every_console_file_is_served_and_nothing_else() {
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        served.sort();
        assert_eq!(served, files_on_disk());
    }

    /// The CSP forbids inline script and style; this keeps the files honest about it, and checks
    /// that every module the console imports and every file the page links is served.
    #[test]
    fn no_inline_script_or_style_and_every_reference_resolves() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("style="), "inline style attribute");
        assert!(!html.contains("<style"), "inline style element");
        let lower = html.to_ascii_lowercase();
        for (i, _) in lower.match_indices("<script") {
            let tag = &lower[i..i + lower[i..].find('>').unwrap()];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        for attr in [" onclick=", " onload=", " onerror=", "javascript:"] {
            assert!(!lower.contains(attr), "{attr} in index.html");
        }
        let served = |p: &str| ASSETS.iter().any(|a| a.path == p);
        for attr in ["src=\"", "href=\""] {
            for (i, _) in html.match_indices(attr) {
                let rest = &html[i + attr.len()..];
                let target = &rest[..rest.find('"').unwrap()];
                if target.starts_with('#') {
                    continue;
                }
                assert!(served(target), "index.html links {target}, which is not served");
            }
        }
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let js = std::str::from_utf8(a.body).unwrap();
            for line in js.lines().filter(|l| l.starts_with("import ") || l.contains("} from '")) {
                let Some(spec) = line.split('\'').nth(1) else { continue };
                let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
                let target = format!("{dir}/{}", spec.trim_start_matches("./"));
                assert!(served(&target), "{} imports {spec}, which is not served", a.path);
            }
            for bad in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!js.contains(bad), "{} uses {bad}", a.path);
            }
        }
    }

    #[test]
    fn etags_follow_the_bytes() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        let mut tags: Vec<u64> = ASSETS.iter().map(|a| a.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
