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
    /// Input not yet decided (a tag or closing tag may still be completing).
    buf: String,
    /// Decided text held back until the first tag is found.
    held: String,
    found: bool,
}

/// What starts at a position of the input.
enum Token {
    /// A complete tag: its code and its length in bytes.
    Tag(String, usize),
    /// A stray closing tag (dropped).
    Close,
    /// A character of text, of this many bytes.
    Char(usize),
    /// Could still become a tag or a closing tag: wait for more input.
    NeedMore,
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
        self.run(false)
    }

    /// The end of the output: everything held back is text (a tag never completed is text).
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = self.run(true);
        let rest = std::mem::take(&mut self.held);
        if !rest.is_empty() {
            out.push(Piece::Text(rest));
        }
        out
    }

    /// Reads the input left to right, each position decided once: the first complete tag gives
    /// the code, later tags and stray closing tags are dropped, the rest is text. Decisions need
    /// at most a tag's length of lookahead, so the result does not depend on how the input was
    /// cut into deltas.
    fn run(&mut self, at_end: bool) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < self.buf.len() {
            match token(&self.buf[i..], at_end) {
                Token::NeedMore => break,
                Token::Close => i += CLOSE.len(),
                Token::Char(n) => {
                    text.push_str(&self.buf[i..i + n]);
                    i += n;
                }
                Token::Tag(code, n) => {
                    if !self.found {
                        self.found = true;
                        out.push(Piece::Stage(code));
                    }
                    i += n;
                }
            }
        }
        self.buf.replace_range(..i, "");
        if self.found {
            let all = std::mem::take(&mut self.held) + &text;
            if !all.is_empty() {
                out.push(Piece::Text(all));
            }
        } else {
            self.held.push_str(&text);
        }
        out
    }
}

/// The token at the start of `s` (not empty).
fn token(s: &str, at_end: bool) -> Token {
    let wait = |fallback: Token| if at_end { fallback } else { Token::NeedMore };
    let first = s.chars().next().map_or(1, char::len_utf8);
    if s.starts_with(CLOSE) {
        return Token::Close;
    }
    if let Some(body) = s.strip_prefix(OPEN) {
        // The code is short and holds no `<` (in `<state><state>1</state>` the tag is the inner one).
        return match body.find('<') {
            Some(j) if j <= MAX_CODE && body[j..].starts_with(CLOSE) => {
                Token::Tag(body[..j].trim().to_string(), OPEN.len() + j + CLOSE.len())
            }
            Some(j) if j <= MAX_CODE && CLOSE.starts_with(&body[j..]) => wait(Token::Char(first)),
            None if body.len() <= MAX_CODE => wait(Token::Char(first)),
            _ => Token::Char(first),
        };
    }
    if s.len() < OPEN.len().max(CLOSE.len()) && (OPEN.starts_with(s) || CLOSE.starts_with(s)) {
        return wait(Token::Char(first));
    }
    Token::Char(first)
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

    /// A plain scan of the whole output, written independently of the filter: a tag is
    /// `<state>` + at most 32 bytes without `<` + `</state>`; the first gives the code; tags and
    /// stray closing tags are removed.
    pub(super) fn reference(s: &str) -> (Option<String>, String) {
        let (mut code, mut text, mut i) = (None, String::new(), 0);
        while i < s.len() {
            let rest = &s[i..];
            if rest.starts_with(CLOSE) {
                i += CLOSE.len();
                continue;
            }
            if let Some(body) = rest.strip_prefix(OPEN)
                && let Some(j) = body.find(CLOSE)
                && j <= MAX_CODE
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
        (code, text)
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Model output built from the pieces that matter: tags whole and broken, stray brackets,
        /// codes of every length, multi-byte text.
        fn output() -> impl Strategy<Value = String> {
            let atoms = prop::sample::select(vec![
                "<state>",
                "</state>",
                "<state>1002</state>",
                "<state> 7 </state>",
                "<",
                "<st",
                "</sta",
                ">",
                "1234",
                "0123456789012345678901234567890123456789",
                "Hello ",
                "通话中",
                "<b>",
                " ",
            ]);
            prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
        }

        proptest! {
            /// However the output is cut into deltas, the filter finds the same code and lets
            /// through the same text as when it gets the output at once.
            #[test]
            fn streamed_equals_batched(text in output(), cuts in prop::collection::vec(0usize..400, 0..16)) {
                let whole = run(&[text.as_str()]);
                let mut idx: Vec<usize> =
                    cuts.into_iter().map(|c| c % (text.len() + 1)).filter(|i| text.is_char_boundary(*i)).collect();
                idx.sort_unstable();
                idx.dedup();
                let mut deltas = Vec::new();
                let mut last = 0;
                for i in idx {
                    deltas.push(&text[last..i]);
                    last = i;
                }
                deltas.push(&text[last..]);
                prop_assert_eq!(run(&deltas), whole);
            }

            /// The code is the first complete tag's, and the text is the input without its tags
            /// and stray closing tags, as a plain scan that sees the whole input decides them.
            #[test]
            fn text_is_the_input_without_its_tags(text in output()) {
                let (code, rest) = reference(&text);
                let mut want = Vec::new();
                want.extend(code.map(Piece::Stage));
                if !rest.is_empty() {
                    want.push(Piece::Text(rest));
                }
                prop_assert_eq!(run(&[text.as_str()]), want);
            }
        }
    }
}
