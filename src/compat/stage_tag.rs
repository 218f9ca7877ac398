//! Finds the `<state>NNNN</state>` tag in streamed model output, even when it is split across
//! deltas, and keeps every tag out of the text.
//!
//! As in the stage API this serves, text is held back until the tag is found (so `stage_code`
//! comes first), then streams freely; text that came before the tag is not lost. After the tag,
//! only what could still be the start of another tag (`<`, `<st`, `</sta`…) is held back.

const OPEN: &str = "<state>";
const CLOSE: &str = "</state>";
/// Longest content accepted between the tags.
const MAX_CODE: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Stage(String),
    Text(String),
}

#[derive(Default)]
pub struct StageTagFilter {
    buf: String,
    found: bool,
}

impl StageTagFilter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn found(&self) -> bool {
        self.found
    }

    pub fn push(&mut self, delta: &str) -> Vec<Piece> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        if !self.found {
            if let Some((code, start, end)) = find_tag(&self.buf) {
                self.found = true;
                out.push(Piece::Stage(code));
                let before = self.buf[..start].to_string();
                self.buf.replace_range(..end, "");
                let after = self.drain_safe();
                let text = before + &after;
                if !text.is_empty() {
                    out.push(Piece::Text(text));
                }
            }
            return out;
        }
        let text = self.drain_safe();
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        out
    }

    /// The end of the output: everything held back is text (a tag never completed is text).
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut rest = std::mem::take(&mut self.buf);
        strip_tags(&mut rest);
        if rest.is_empty() { vec![] } else { vec![Piece::Text(rest)] }
    }

    /// After the first tag: returns the text that cannot be part of a tag, removing whole tags.
    fn drain_safe(&mut self) -> String {
        strip_tags(&mut self.buf);
        let hold = partial_tag_start(&self.buf).unwrap_or(self.buf.len());
        let out = self.buf[..hold].to_string();
        self.buf.replace_range(..hold, "");
        out
    }
}

/// `(code, start, end)` of the first complete tag.
fn find_tag(s: &str) -> Option<(String, usize, usize)> {
    let mut from = 0;
    while let Some(i) = s[from..].find(OPEN).map(|i| i + from) {
        let body = i + OPEN.len();
        match s[body..].find(CLOSE) {
            Some(j) if j <= MAX_CODE => return Some((s[body..body + j].trim().to_string(), i, body + j + CLOSE.len())),
            Some(_) => from = body,
            None => return None,
        }
    }
    None
}

/// Removes every complete `<state>…</state>` tag (and stray closing tags).
fn strip_tags(s: &mut String) {
    while let Some((_, a, b)) = find_tag(s) {
        s.replace_range(a..b, "");
    }
    while let Some(i) = s.find(CLOSE) {
        s.replace_range(i..i + CLOSE.len(), "");
    }
}

/// Where a possibly incomplete tag starts: an unclosed `<state>…` or a `<` that could begin one.
fn partial_tag_start(s: &str) -> Option<usize> {
    if let Some(i) = s.rfind(OPEN)
        && !s[i..].contains(CLOSE)
        && s.len() - i <= OPEN.len() + MAX_CODE + CLOSE.len()
    {
        return Some(i);
    }
    let i = s.rfind('<')?;
    let tail = &s[i..];
    (OPEN.starts_with(tail) || CLOSE.starts_with(tail)).then_some(i)
}

/// Applies the remap table, then looks up the display name (`""` when unknown).
pub fn resolve(
    code: &str,
    remap: &std::collections::BTreeMap<String, String>,
    names: &std::collections::BTreeMap<String, String>,
) -> (String, String) {
    let code = remap.get(code).cloned().unwrap_or_else(|| code.to_string());
    let name = names.get(&code).cloned().unwrap_or_default();
    (code, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(deltas: &[&str]) -> Vec<Piece> {
        let mut f = StageTagFilter::new();
        let mut out: Vec<Piece> = deltas.iter().flat_map(|d| f.push(d)).collect();
        out.extend(f.finish());
        // Merge adjacent text for easy comparison.
        let mut merged: Vec<Piece> = Vec::new();
        for p in out {
            match (merged.last_mut(), p) {
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (_, p) => merged.push(p),
            }
        }
        merged
    }

    #[test]
    fn a_tag_split_across_three_deltas() {
        assert_eq!(
            run(&["<sta", "te>10", "02</state>Hello"]),
            [Piece::Stage("1002".into()), Piece::Text("Hello".into())]
        );
    }

    #[test]
    fn text_before_the_tag_is_kept_and_later_tags_never_leak() {
        assert_eq!(
            run(&["Sure. ", "<state>2006</state>", "Next <sta", "te>9</state>step <", "b>"]),
            [Piece::Stage("2006".into()), Piece::Text("Sure. Next step <b>".into())]
        );
    }

    #[test]
    fn no_tag_means_all_text_at_the_end() {
        let mut f = StageTagFilter::new();
        assert!(f.push("Hello <st").is_empty(), "held back until a tag appears or the end");
        assert_eq!(f.finish(), [Piece::Text("Hello <st".into())]);
    }

    #[test]
    fn streams_after_the_tag() {
        let mut f = StageTagFilter::new();
        assert_eq!(f.push("<state>0000</state>"), [Piece::Stage("0000".into())]);
        assert_eq!(f.push("Bye"), [Piece::Text("Bye".into())]);
        assert_eq!(f.push(" now <"), [Piece::Text(" now ".into())]);
        assert_eq!(f.push("3"), [Piece::Text("<3".into())]);
    }

    #[test]
    fn remapping() {
        let remap = [("3001".to_string(), "1002".to_string())].into_iter().collect();
        let names = [("1002".to_string(), "通话中".to_string())].into_iter().collect();
        assert_eq!(resolve("3001", &remap, &names), ("1002".into(), "通话中".into()));
        assert_eq!(resolve("7777", &remap, &names), ("7777".into(), String::new()));
    }
}
