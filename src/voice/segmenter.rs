//! Sentence segmentation of streamed LLM text, for sentence-by-sentence TTS.
//!
//! Cuts after `.` `。` `!` `！` `?` `？` `;` `；` and newlines, but keeps decimals (`3.14`),
//! abbreviations (`e.g.`, `Mr.`), initials (`J. R. R.`), URLs and file names (`example.com/a?b`)
//! and ellipses (`...`, `…`) whole. A chunk shorter than `min_chars` waits for the next sentence; a
//! run of text without any terminator is cut at a soft break (comma, space) once it reaches
//! `max_chars`, so speech never waits for a very long sentence. `finish` flushes the rest.
//!
//! The result does not depend on how the text was split into deltas: every decision looks only
//! at text already received, and one that needs the next character waits for it.

/// Abbreviations that do not end a sentence (compared case-insensitively, without the dot).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie", "no", "fig", "approx",
    "inc", "ltd", "co", "corp", "dept", "est", "mt", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "u.s", "u.k", "a.m", "p.m", "cf", "al", "vol", "ca",
];

/// Characters that close a sentence together with its terminator.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '」' | '』' | '）' | '】' | '》')
}

/// Full-width terminators: no space follows them in CJK text.
fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '…')
}

fn is_soft_break(c: char) -> bool {
    matches!(c, ',' | '，' | '、' | ':' | '：') || c.is_whitespace()
}

pub struct Segmenter {
    buf: String,
    /// Byte offset where the pending (not yet emitted) text starts.
    start: usize,
    /// Byte offset where scanning resumes.
    pos: usize,
    /// Byte offset just after the last soft break in the pending text.
    soft: Option<usize>,
    min_chars: usize,
    max_chars: usize,
    /// Characters of the pending text up to `counted`, not counting leading whitespace. Kept
    /// incrementally so each character is counted once (no rescans of a growing buffer).
    count: usize,
    counted: usize,
}

impl Segmenter {
    pub fn new(min_chars: usize) -> Self {
        Self::with_limits(min_chars, 240)
    }

    pub fn with_limits(min_chars: usize, max_chars: usize) -> Self {
        Self {
            buf: String::new(),
            start: 0,
            pos: 0,
            soft: None,
            min_chars,
            max_chars: max_chars.max(min_chars + 1),
            count: 0,
            counted: 0,
        }
    }

    /// Adds a delta; returns the sentences it completed.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        self.scan(false, &mut out);
        self.compact();
        out
    }

    /// Ends the text: returns the remaining sentences (the last one may be short).
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.scan(true, &mut out);
        let rest = self.buf[self.start..].trim();
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
        self.buf.clear();
        self.start = 0;
        self.pos = 0;
        self.soft = None;
        self.count = 0;
        self.counted = 0;
        out
    }

    fn compact(&mut self) {
        if self.start > 4096 {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.counted -= self.start;
            self.soft = self.soft.map(|s| s - self.start);
            self.start = 0;
        }
    }

    fn emit(&mut self, end: usize, out: &mut Vec<String>) {
        let s = self.buf[self.start..end].trim();
        if !s.is_empty() {
            out.push(s.to_string());
        }
        self.start = end;
        self.soft = None;
        // Recount only what was already scanned past the cut (at most `max_chars`).
        let to = self.counted.max(end);
        self.count = 0;
        self.counted = end;
        self.pending_chars(to);
    }

    /// Pending characters up to `end` (leading whitespace excluded), counted incrementally.
    fn pending_chars(&mut self, end: usize) -> usize {
        if end > self.counted {
            for c in self.buf[self.counted..end].chars() {
                if self.count > 0 || !c.is_whitespace() {
                    self.count += 1;
                }
            }
            self.counted = end;
        }
        if self.count == 0 {
            // Only whitespace so far: drop it, so a stream of blanks cannot grow the buffer.
            self.start = self.counted;
        }
        self.count
    }

    fn scan(&mut self, at_end: bool, out: &mut Vec<String>) {
        loop {
            let Some(c) = self.buf[self.pos..].chars().next() else { return };
            let after = self.pos + c.len_utf8();
            let next = self.buf[after..].chars().next();
            let boundary_end = match c {
                '\n' => Some(after),
                c if is_cjk_terminator(c) => {
                    // Closing quotes may follow in the next delta: decide once something else arrives.
                    let end = self.absorb_closers(after);
                    if end == self.buf.len() && !at_end {
                        return;
                    }
                    Some(end)
                }
                '.' | '!' | '?' | ';' => {
                    let Some(n) = next else {
                        if !at_end {
                            return; // the next character decides
                        }
                        self.pos = after;
                        continue;
                    };
                    match self.ascii_boundary(c, after, n, at_end) {
                        Decision::Wait => return,
                        Decision::Cut(e) => Some(e),
                        Decision::Keep(skip) => {
                            self.pos = skip;
                            continue;
                        }
                    }
                }
                _ => None,
            };
            match boundary_end {
                Some(end) => {
                    self.pos = end;
                    if self.pending_chars(end) >= self.min_chars {
                        self.emit(end, out);
                    } else {
                        self.soft = Some(end);
                    }
                }
                None => {
                    self.pos = after;
                    if is_soft_break(c) {
                        self.soft = Some(after);
                    }
                    if self.pending_chars(after) >= self.max_chars {
                        let cut = self.soft.filter(|s| *s > self.start).unwrap_or(after);
                        self.emit(cut, out);
                    }
                }
            }
        }
    }

    /// Extends a boundary over closing quotes and brackets.
    fn absorb_closers(&self, mut end: usize) -> usize {
        while let Some(c) = self.buf[end..].chars().next().filter(|c| is_closer(*c)) {
            end += c.len_utf8();
        }
        end
    }

    fn ascii_boundary(&self, c: char, after: usize, next: char, at_end: bool) -> Decision {
        if c == '.' {
            if next == '.' {
                // An ellipsis: skip the whole run of dots, then decide on what follows it.
                let run_end = after + self.buf[after..].chars().take_while(|x| *x == '.').count();
                let Some(n2) = self.buf[run_end..].chars().next() else {
                    return if at_end { Decision::Keep(run_end) } else { Decision::Wait };
                };
                return if n2.is_whitespace() { Decision::Cut(run_end) } else { Decision::Keep(run_end) };
            }
            let prev = self.buf[..after - 1].chars().next_back();
            if next.is_ascii_digit() && prev.is_some_and(|p| p.is_ascii_digit()) {
                return Decision::Keep(after); // 3.14
            }
            if self.is_abbreviation(after - 1) {
                return Decision::Keep(after);
            }
        }
        if next.is_whitespace() {
            return Decision::Cut(after);
        }
        if is_closer(next) {
            let end = self.absorb_closers(after);
            return match self.buf[end..].chars().next() {
                Some(n) if n.is_whitespace() => Decision::Cut(end),
                Some(_) => Decision::Keep(end),
                None if at_end => Decision::Cut(end),
                None => Decision::Wait,
            };
        }
        if matches!(c, '!' | '?') && matches!(next, '!' | '?') {
            return Decision::Keep(after); // "?!" — decide at the last mark
        }
        // Followed by a letter, digit or symbol: a URL, a file name, "e.g", "3.x"…
        Decision::Keep(after)
    }

    /// Whether the word ending at the '.' at byte `dot` is an abbreviation or an initial.
    fn is_abbreviation(&self, dot: usize) -> bool {
        let head = &self.buf[self.start..dot];
        let word: String = head
            .chars()
            .rev()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '(' | '"' | '“'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let lower = word.to_lowercase();
        if ABBREVIATIONS.contains(&lower.as_str()) {
            return true;
        }
        let mut chars = word.chars();
        // A single capital letter: an initial ("J. Smith").
        matches!((chars.next(), chars.next()), (Some(c), None) if c.is_uppercase())
    }
}

enum Decision {
    /// Wait for more text before deciding.
    Wait,
    /// A boundary ending at this byte offset.
    Cut(usize),
    /// Not a boundary; continue scanning at this offset.
    Keep(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str, min: usize) -> Vec<String> {
        let mut s = Segmenter::new(min);
        let mut out = s.push(text);
        out.extend(s.finish());
        out
    }

    #[test]
    fn basic_cuts() {
        assert_eq!(split("Hello there. How are you? Fine!", 1), ["Hello there.", "How are you?", "Fine!"]);
        assert_eq!(
            split("你好。今天天气很好！我们走吧？好；行", 1),
            ["你好。", "今天天气很好！", "我们走吧？", "好；", "行"]
        );
        assert_eq!(split("line one\nline two", 1), ["line one", "line two"]);
    }

    #[test]
    fn keeps_decimals_abbreviations_urls_and_ellipses() {
        assert_eq!(split("Pi is 3.14 roughly. Yes.", 1), ["Pi is 3.14 roughly.", "Yes."]);
        assert_eq!(split("Ask Mr. Smith, e.g. today. Done.", 1), ["Ask Mr. Smith, e.g. today.", "Done."]);
        assert_eq!(split("See https://example.com/a?b=1 now. Ok.", 1), ["See https://example.com/a?b=1 now.", "Ok."]);
        assert_eq!(
            split("Wait... what? J. R. R. Tolkien wrote it.", 1),
            ["Wait...", "what?", "J. R. R. Tolkien wrote it."]
        );
        assert_eq!(split("He said \"stop.\" Then left.", 1), ["He said \"stop.\"", "Then left."]);
    }

    #[test]
    fn short_chunks_wait_for_the_next_sentence() {
        assert_eq!(split("Hi. Ok. This is longer.", 10), ["Hi. Ok. This is longer."]);
        assert_eq!(split("Hi. This one is long enough. Ok.", 10), ["Hi. This one is long enough.", "Ok."]);
    }

    #[test]
    fn long_runs_are_cut_at_soft_breaks() {
        let text = "word, ".repeat(100);
        let mut s = Segmenter::with_limits(5, 50);
        let out = s.push(&text);
        assert!(!out.is_empty());
        assert!(out.iter().all(|x| x.chars().count() <= 50), "{out:?}");
    }

    #[test]
    fn a_dot_at_the_end_of_a_delta_waits() {
        let mut s = Segmenter::new(1);
        assert_eq!(s.push("Version 3."), Vec::<String>::new());
        assert_eq!(s.push("14 is out. Next"), ["Version 3.14 is out."]);
        assert_eq!(s.finish(), ["Next"]);
    }

    #[test]
    fn a_storm_of_whitespace_is_not_buffered() {
        let mut s = Segmenter::new(10);
        for _ in 0..200 {
            assert!(s.push(&" \n ".repeat(1000)).is_empty());
        }
        assert!(s.buf.len() < 8192, "whitespace-only text is dropped as it comes ({} bytes kept)", s.buf.len());
        assert_eq!(s.push("Then words finally arrive. "), ["Then words finally arrive."]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn pieces() -> impl Strategy<Value = String> {
            let atoms = prop::sample::select(vec![
                "Hello",
                " ",
                "world",
                ".",
                "!",
                "?",
                ";",
                "\n",
                "3.14",
                "e.g.",
                "Mr.",
                "...",
                "…",
                "你好",
                "。",
                "！",
                "？",
                "；",
                "https://a.b/c?d=1",
                "\"",
                ")",
                ",",
                "x",
            ]);
            prop::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
        }

        proptest! {
            #[test]
            fn nothing_is_lost(text in pieces(), min in 1usize..20) {
                let out = split(&text, min);
                let joined: String = out.concat().chars().filter(|c| !c.is_whitespace()).collect();
                let orig: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                prop_assert_eq!(joined, orig);
                prop_assert!(out.iter().all(|s| !s.trim().is_empty()));
            }

            #[test]
            fn delta_boundaries_do_not_matter(text in pieces(), cuts in prop::collection::vec(0usize..200, 0..12), min in 1usize..15) {
                let whole = split(&text, min);
                let mut idx: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).filter(|i| text.is_char_boundary(*i)).collect();
                idx.sort_unstable();
                idx.dedup();
                let mut s = Segmenter::new(min);
                let mut out = Vec::new();
                let mut last = 0;
                for i in idx {
                    out.extend(s.push(&text[last..i]));
                    last = i;
                }
                out.extend(s.push(&text[last..]));
                out.extend(s.finish());
                prop_assert_eq!(out, whole);
            }
        }
    }
}
