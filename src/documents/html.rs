//! HTML to plain text with a streaming tag stripper.
//!
//! Why not a DOM-based converter (`html2text` on `html5ever`): its tree walk recurses per nesting
//! level, and a stack overflow on `<div>` × 100 000 aborts the whole server — `catch_unwind` cannot
//! catch it. This scanner keeps no element stack: counters only, one pass, linear time, and it stops
//! as soon as the text cap is reached. It drops `<head>` (except the title), scripts, styles,
//! templates, SVG and comments; turns block elements into line breaks, `<li>` into `- ` items,
//! `<h1>`…`<h6>` into `#` headings and table cells into tabs; decodes character references (the
//! numeric ones and the common named ones); and collapses whitespace outside `<pre>`.
//!
//! Encoding: a BOM, else `<meta charset>` (or `content="…; charset=…"`) in the first 1024 bytes, else
//! UTF-8; undecodable bytes become U+FFFD.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use super::{DocError, Extracted, Limits, TextSink};

/// How often (in scanner steps) the deadline is checked.
const DEADLINE_EVERY: u32 = 4096;

pub(super) fn extract_file(path: &Path, limits: &Limits, deadline: Instant) -> Result<Extracted, DocError> {
    let bytes = std::fs::read(path).map_err(DocError::io)?;
    let text = decode(&bytes);
    let mut sink = TextSink::new(limits.max_text_bytes);
    if !to_text(&text, &mut sink, deadline) {
        return Err(DocError::Timeout(limits.timeout));
    }
    let (text, truncated) = sink.finish();
    Ok(Extracted { text, truncated, pages: None })
}

/// The document as text: encoding from the BOM, else the `<meta>` charset, else UTF-8.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    let (encoding, bom) = encoding_rs::Encoding::for_bom(bytes)
        .or_else(|| meta_charset(&bytes[..bytes.len().min(1024)]).map(|e| (e, 0)))
        .unwrap_or((encoding_rs::UTF_8, 0));
    // A page that declares UTF-16 without a BOM is really ASCII-compatible (per the HTML spec).
    let encoding = if (encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE) && bom == 0 {
        encoding_rs::UTF_8
    } else {
        encoding
    };
    encoding.decode_without_bom_handling(&bytes[bom..]).0
}

fn meta_charset(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    let at = lower.windows(8).position(|w| w == b"charset=")? + 8;
    let rest = &head[at..];
    let rest = rest.strip_prefix(b"\"").or_else(|| rest.strip_prefix(b"'")).unwrap_or(rest);
    let end = rest.iter().position(|b| !(b.is_ascii_alphanumeric() || b"-_:.".contains(b))).unwrap_or(rest.len());
    encoding_rs::Encoding::for_label(&rest[..end])
}

/// Elements whose content is never text for a reader; skipped up to their end tag.
const SKIPPED: &[&str] = &["script", "style", "template", "svg", "math", "noscript", "iframe", "object", "select"];
/// Elements that start and end a line.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "caption",
    "center",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hr",
    "legend",
    "main",
    "nav",
    "ol",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "title",
    "ul",
];
/// Elements that stand apart from their neighbours by a blank line.
const PARAGRAPHS: &[&str] = &["p", "pre", "h1", "h2", "h3", "h4", "h5", "h6"];

/// Scanner state between tags: counters, never a stack.
#[derive(Default)]
struct State {
    in_head: bool,
    in_title: bool,
    pre: usize,
    first_cell: bool,
}

/// Converts `html` into `sink`; `false` if the deadline passed first.
fn to_text(html: &str, sink: &mut TextSink, deadline: Instant) -> bool {
    let b = html.as_bytes();
    let mut st = State::default();
    let mut i = 0;
    let mut steps = 0u32;
    while i < b.len() && !sink.is_full() {
        steps = steps.wrapping_add(1);
        if steps.is_multiple_of(DEADLINE_EVERY) && Instant::now() >= deadline {
            return false;
        }
        if b[i] == b'<' {
            if b[i..].starts_with(b"<!--") {
                i = find(b, i + 4, b"-->").map_or(b.len(), |e| e + 3);
                continue;
            }
            if matches!(b.get(i + 1), Some(b'!' | b'?')) {
                i = find(b, i, b">").map_or(b.len(), |e| e + 1);
                continue;
            }
            let closing = b.get(i + 1) == Some(&b'/');
            let name_start = i + 1 + usize::from(closing);
            if b.get(name_start).is_some_and(u8::is_ascii_alphabetic) {
                let name_end = name_start
                    + b[name_start..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b':'))
                        .count();
                let name = html[name_start..name_end].to_ascii_lowercase();
                i = tag_end(b, name_end);
                if !closing && SKIPPED.contains(&name.as_str()) {
                    i = find_end_tag(b, i, name.as_bytes()).unwrap_or(b.len());
                    continue;
                }
                on_tag(&name, closing, &mut st, sink);
                continue;
            }
        }
        // Text up to the next tag (a lone '<' is text too).
        let end = find(b, i + 1, b"<").unwrap_or(b.len());
        if !st.in_head || st.in_title {
            push_text(&html[i..end], st.pre > 0, sink);
        }
        i = end;
    }
    true
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// The index after the `>` closing a tag whose attributes start at `from`; quoted attribute
/// values may hold `>`. An unclosed tag runs to the end, as in a browser.
fn tag_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    let mut after_eq = false;
    while i < b.len() {
        match b[i] {
            b'>' => return i + 1,
            q @ (b'"' | b'\'') if after_eq => {
                i = b[i + 1..].iter().position(|&c| c == q).map_or(b.len(), |p| i + 1 + p);
                after_eq = false;
            }
            b'=' => after_eq = true,
            c if c.is_ascii_whitespace() => {}
            _ => after_eq = false,
        }
        i += 1;
    }
    b.len()
}

/// The start of `</name` (any case) at or after `from`.
fn find_end_tag(b: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut at = from;
    loop {
        let p = find(b, at, b"</")?;
        let rest = &b[p + 2..];
        if rest.len() >= name.len()
            && rest[..name.len()].eq_ignore_ascii_case(name)
            && rest.get(name.len()).is_none_or(|c| !c.is_ascii_alphanumeric())
        {
            return Some(p);
        }
        at = p + 2;
    }
}

fn on_tag(name: &str, closing: bool, st: &mut State, sink: &mut TextSink) {
    match name {
        "head" => st.in_head = !closing,
        "body" => st.in_head = false,
        "title" => st.in_title = !closing,
        "pre" => st.pre = if closing { st.pre.saturating_sub(1) } else { st.pre + 1 },
        _ => {}
    }
    match name {
        "br" => sink.newline(),
        "li" if !closing => {
            sink.newline();
            sink.push_str("- ");
        }
        "tr" => {
            sink.newline();
            st.first_cell = true;
        }
        "td" | "th" if !closing => {
            if !st.first_cell {
                sink.tab();
            }
            st.first_cell = false;
        }
        _ if PARAGRAPHS.contains(&name) => {
            sink.blank_line();
            if !closing && let Some(level) = name.strip_prefix('h').and_then(|l| l.parse::<usize>().ok()) {
                sink.push_str(&"#".repeat(level));
                sink.push_char(' ');
            }
        }
        _ if BLOCKS.contains(&name) || name == "li" => sink.newline(),
        _ => {}
    }
}

/// Text with character references decoded; whitespace collapsed unless in `<pre>`.
fn push_text(raw: &str, pre: bool, sink: &mut TextSink) {
    let mut rest = raw;
    while !rest.is_empty() && !sink.is_full() {
        let (chunk, reference) = match rest.find('&') {
            Some(amp) => (&rest[..amp], Some(amp)),
            None => (rest, None),
        };
        push_plain(chunk, pre, sink);
        let Some(amp) = reference else { break };
        let used = match char_ref(&rest[amp..]) {
            Some((text, used)) => {
                // Decoded text is never whitespace-collapsed away: `a&nbsp;b` keeps its space.
                sink.push_str(&text);
                used
            }
            None => {
                sink.push_str("&");
                1
            }
        };
        rest = &rest[amp + used..];
    }
}

fn push_plain(s: &str, pre: bool, sink: &mut TextSink) {
    if pre {
        sink.push_str(&s.replace("\r\n", "\n"));
        return;
    }
    let mut words = s.split(|c: char| c.is_ascii_whitespace()).peekable();
    let leading_space = s.starts_with(|c: char| c.is_ascii_whitespace());
    if leading_space {
        sink.space();
    }
    while let Some(w) = words.next() {
        if w.is_empty() {
            continue;
        }
        sink.push_str(w);
        if words.peek().is_some() {
            sink.space();
        }
    }
}

/// A character reference at the start of `s` (which starts with `&`): the text it stands for and
/// the bytes it used; `None` when it is just an ampersand (unknown names are left as written).
fn char_ref(s: &str) -> Option<(Cow<'static, str>, usize)> {
    let semi = s.as_bytes().iter().take(34).position(|&c| c == b';')?;
    let name = &s[1..semi];
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        let c = char::from_u32(code).filter(|&c| c != '\0').unwrap_or('\u{FFFD}');
        return Some((Cow::Owned(c.to_string()), semi + 1));
    }
    NAMED.iter().find(|(n, _)| *n == name).map(|(_, v)| (Cow::Borrowed(*v), semi + 1))
}

/// Named references seen in real pages; others are left as written.
const NAMED: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", " "),
    ("ensp", " "),
    ("emsp", " "),
    ("thinsp", " "),
    ("shy", ""),
    ("zwj", ""),
    ("zwnj", ""),
    ("ndash", "–"),
    ("mdash", "—"),
    ("hellip", "…"),
    ("lsquo", "‘"),
    ("rsquo", "’"),
    ("sbquo", "‚"),
    ("ldquo", "“"),
    ("rdquo", "”"),
    ("bdquo", "„"),
    ("laquo", "«"),
    ("raquo", "»"),
    ("bull", "•"),
    ("middot", "·"),
    ("copy", "©"),
    ("reg", "®"),
    ("trade", "™"),
    ("deg", "°"),
    ("plusmn", "±"),
    ("times", "×"),
    ("divide", "÷"),
    ("frac12", "½"),
    ("frac14", "¼"),
    ("frac34", "¾"),
    ("euro", "€"),
    ("pound", "£"),
    ("yen", "¥"),
    ("cent", "¢"),
    ("sect", "§"),
    ("para", "¶"),
    ("larr", "←"),
    ("rarr", "→"),
    ("uarr", "↑"),
    ("darr", "↓"),
    ("le", "≤"),
    ("ge", "≥"),
    ("ne", "≠"),
    ("asymp", "≈"),
    ("infin", "∞"),
    ("micro", "µ"),
    ("eacute", "é"),
    ("egrave", "è"),
    ("aacute", "á"),
    ("agrave", "à"),
    ("auml", "ä"),
    ("ouml", "ö"),
    ("uuml", "ü"),
    ("szlig", "ß"),
    ("ccedil", "ç"),
    ("ntilde", "ñ"),
];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{DocKind, extract_text};
    use super::*;

    fn convert(html: &str) -> String {
        let mut sink = TextSink::new(1 << 20);
        assert!(to_text(html, &mut sink, Instant::now() + Duration::from_secs(10)));
        sink.finish().0
    }

    #[test]
    fn strips_markup_and_keeps_structure() {
        let html = r#"<!DOCTYPE html><html><head><title>The  lemur page</title><meta charset="utf-8">
            <style>p { color: red }</style><script>if (a < b) { document.write("<p>no</p>") }</script></head>
            <body><!-- hidden --><h1>Lemurs</h1><p>Lemurs   live in
            <b>Madagascar</b>&nbsp;&amp; nowhere&#x20;else &copy; &bogus; a&b</p>
            <ul><li>ring-tailed</li><li>mouse</li></ul>
            <table><tr><th>Name</th><th>Weight</th></tr><tr><td>Indri</td><td>9 kg</td></tr></table>
            <pre>  keep
   this</pre><div>x<br>y</div><a href="/x" title="a > b">link</a></body></html>"#;
        assert_eq!(
            convert(html),
            "The lemur page\n\n# Lemurs\n\nLemurs live in Madagascar & nowhere else © &bogus; a&b\n\n- ring-tailed\n- mouse\nName\tWeight\nIndri\t9 kg\n\n  keep\n   this\n\nx\ny\nlink"
        );
    }

    #[test]
    fn survives_hostile_markup() {
        // Deep nesting: no stack, no recursion.
        let deep = format!("{}deep gibbon{}", "<div><span>".repeat(200_000), "</span></div>".repeat(10));
        assert_eq!(convert(&deep), "deep gibbon");
        // Unclosed things run to the end, as in a browser; nothing panics or loops.
        for s in [
            "<a title=\"never closed",
            "<!-- open comment",
            "<script>forever",
            "< not a tag &#xFFFFFFFF; &#0; &",
            "<",
            "&",
        ] {
            let _ = convert(s);
        }
        assert_eq!(convert("1 < 2 &#xFFFFFFFF; &#0; &#x1FFFFFFFF;"), "1 < 2 \u{FFFD} \u{FFFD} &#x1FFFFFFFF;");
    }

    #[test]
    fn decodes_the_declared_charset() {
        let (gbk, _, _) =
            encoding_rs::GBK.encode("<html><head><meta charset=\"gbk\"></head><body>你好，世界</body></html>");
        assert_eq!(convert(&decode(&gbk)), "你好，世界");
        let latin = b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"><p>caf\xe9</p>";
        assert_eq!(convert(&decode(latin)), "café");
        assert_eq!(convert(&decode(b"\xEF\xBB\xBF<p>bom \xC3\xA9</p>")), "bom é");
        assert_eq!(convert(&decode(b"<p>bad \xFF byte</p>")), "bad \u{FFFD} byte");
    }

    #[tokio::test]
    async fn extracts_a_file_and_caps_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("page.html");
        let body: String = (0..2000).map(|i| format!("<p>Paragraph {i} on the tapir</p>")).collect();
        std::fs::write(&p, format!("<html><body>{body}</body></html>")).unwrap();
        let limits = Limits { max_text_bytes: 500, ..Limits::default() };
        let e = extract_text(&p, DocKind::Html, &limits).await.unwrap();
        assert!(e.truncated && e.text.len() <= 500);
        assert!(e.text.starts_with("Paragraph 0 on the tapir\n\nParagraph 1 on the tapir"), "{}", e.text);
        assert_eq!(e.pages, None);
    }

    #[test]
    fn a_passed_deadline_stops_the_scan() {
        let mut sink = TextSink::new(1 << 20);
        let big = "<p>x</p>".repeat(100_000);
        assert!(!to_text(&big, &mut sink, Instant::now()));
    }
}
