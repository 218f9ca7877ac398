//! The `<state>` tag filter (compat/stage_tag.rs), differentially: however the output is cut into
//! deltas, the code is the first complete tag's and the text is the output without its tags and
//! stray closing tags, exactly as a plain scan of the whole output (below) decides them.
#![no_main]

use astrgate::compat::stage_tag::{Piece, StageTagFilter};
use libfuzzer_sys::fuzz_target;

#[path = "cuts.rs"]
mod cuts;

const OPEN: &str = "<state>";
const CLOSE: &str = "</state>";

fn reference(s: &str) -> Vec<Piece> {
    let (mut code, mut text, mut i) = (None, String::new(), 0);
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with(CLOSE) {
            i += CLOSE.len();
            continue;
        }
        if let Some(body) = rest.strip_prefix(OPEN)
            && let Some(j) = body.find(CLOSE)
            && j <= 32
            && !body[..j].contains('<')
        {
            code.get_or_insert_with(|| body[..j].trim().to_string());
            i += OPEN.len() + j + CLOSE.len();
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        text.push(c);
        i += c.len_utf8();
    }
    let mut out: Vec<Piece> = code.map(Piece::Stage).into_iter().collect();
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

fn run(deltas: &[&str]) -> Vec<Piece> {
    let mut f = StageTagFilter::new();
    let mut out: Vec<Piece> = deltas.iter().flat_map(|d| f.push(d)).collect();
    out.extend(f.finish());
    let mut merged: Vec<Piece> = Vec::new();
    for p in out {
        match (merged.last_mut(), p) {
            (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
            (_, p) => merged.push(p),
        }
    }
    merged
}

fuzz_target!(|data: &[u8]| {
    let (text, cuts) = cuts::text_and_cuts(data);
    assert_eq!(run(&cuts::deltas(&text, &cuts)), reference(&text));
});
