//! Response headers of a download: the content disposition (with a safe file name), which
//! stored types are served inline, and single byte ranges.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters escaped in the RFC 5987 `filename*` parameter.
const ATTR: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `<disposition>; filename="ascii fallback"; filename*=UTF-8''percent-encoded`.
pub fn content_disposition(disposition: &str, name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    format!("{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{}", utf8_percent_encode(name, ATTR))
}

/// How a stored file is served: its own type inline when it is passive (a browser only displays
/// it: raster images, audio, video, PDF, plain text); anything else — HTML, SVG, XML, scripts,
/// unknown types — as a download of `application/octet-stream`, so no uploaded file can run
/// script in our origin. Every download also carries `nosniff` and `CSP: sandbox`.
pub fn served_as(mime: &str) -> (&str, &'static str) {
    let essence = mime.split(';').next().unwrap_or_default().trim();
    let passive = matches!(
        essence,
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/bmp"
            | "image/avif"
            | "image/x-icon"
            | "application/pdf"
            | "text/plain"
    ) || essence.starts_with("audio/")
        || essence.starts_with("video/");
    if passive { (mime, "inline") } else { ("application/octet-stream", "attachment") }
}

/// A `Range` that cannot be satisfied (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parses a single `bytes=` range against `len`; `Err(Unsatisfiable)` when unsatisfiable, `Ok(None)` when
/// absent or not a single byte range (the whole file is then sent).
pub fn parse_range(h: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = h.and_then(|v| v.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 {
            return Err(Unsatisfiable);
        }
        (len.saturating_sub(n), len.saturating_sub(1))
    } else {
        let s: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let e: u64 = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| Unsatisfiable)?.min(len.saturating_sub(1))
        };
        (s, e)
    };
    if len == 0 || start >= len || start > end {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-y"), 100), Err(Unsatisfiable));
    }

    #[test]
    fn disposition() {
        assert_eq!(
            content_disposition("inline", "résumé \"x\".pdf"),
            "inline; filename=\"r_sum_ _x_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf"
        );
        assert_eq!(served_as("image/png"), ("image/png", "inline"));
        assert_eq!(served_as("text/plain; charset=utf-8"), ("text/plain; charset=utf-8", "inline"));
        for active in ["text/html", "image/svg+xml", "application/xml", "text/javascript", "application/x-foo"] {
            assert_eq!(served_as(active), ("application/octet-stream", "attachment"), "{active}");
        }
    }
}
