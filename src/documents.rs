//! Documents as text for a model: PDF, office documents (docx/xlsx/pptx and their macro-enabled
//! twins, ODF text/spreadsheet/presentation) and HTML.
//!
//! Owns: recognising a document from its bytes ([`detect`]) and turning it into plain text capped
//! at a byte limit ([`extract_text`]), within fixed bounds of time, memory and output; and one way
//! to show that text to a model ([`Extracted::render`]). Must not: decide how a prompt is assembled,
//! touch the store, or block the async runtime.
//!
//! Every input is treated as hostile, and every path is bounded:
//! - PDF goes to poppler's `pdftotext` in a child process (see `pdf.rs`): under `prlimit` (address
//!   space, CPU seconds), with an empty environment, a wall-clock timeout, and its output read only
//!   up to the cap. A parser crash is a failed child, never a crashed server.
//! - Zip-based documents are read with `zip` + `quick-xml` on a blocking thread (see `office.rs`):
//!   only the parts that hold text, through readers that share one budget of decompressed bytes and
//!   check the deadline on every read. XML is streamed, never built into a tree.
//! - HTML is converted by a streaming tag stripper (see `html.rs`): no DOM and no recursion, so no
//!   stack overflow on deep nesting, and linear time.
//!
//! [`Reader`] is what the server uses: the tools looked up once, the limits from `[files]`, and a
//! semaphore bounding how many documents are read at once (each PDF is a process, each office
//! document a blocking thread); its permit lives as long as the work it admits, even when the
//! request that asked for it is gone.
//!
//! Text layout: PDF pages start with `[Page N]` on a line of their own (pages separated by a blank
//! line); spreadsheets start each sheet with `[Sheet NAME]`, presentations each slide with
//! `[Slide N]`; table cells are separated by tabs, rows by newlines.

mod html;
mod office;
mod pdf;

#[cfg(test)]
pub(crate) mod fixtures;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use pdf::PdfTools;

/// A document kind whose text can be extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    Pdf,
    /// Word (also `.docm`).
    Docx,
    /// Excel (also `.xlsm`).
    Xlsx,
    /// PowerPoint (also `.pptm`).
    Pptx,
    /// OpenDocument text.
    Odt,
    /// OpenDocument spreadsheet.
    Ods,
    /// OpenDocument presentation.
    Odp,
    Html,
}

impl DocKind {
    /// A short name for messages: `PDF`, `docx`, `HTML`, …
    pub fn label(self) -> &'static str {
        match self {
            DocKind::Pdf => "PDF",
            DocKind::Docx => "docx",
            DocKind::Xlsx => "xlsx",
            DocKind::Pptx => "pptx",
            DocKind::Odt => "odt",
            DocKind::Ods => "ods",
            DocKind::Odp => "odp",
            DocKind::Html => "HTML",
        }
    }

    fn is_ooxml(self) -> bool {
        matches!(self, DocKind::Docx | DocKind::Xlsx | DocKind::Pptx)
    }

    fn is_zip(self) -> bool {
        !matches!(self, DocKind::Pdf | DocKind::Html)
    }
}

impl fmt::Display for DocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Bounds on one extraction.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most bytes of text returned; longer text is cut on a character boundary and `truncated` set.
    pub max_text_bytes: usize,
    /// Largest file accepted at all (checked before anything is parsed).
    pub max_input_bytes: u64,
    /// Wall-clock bound on one extraction.
    pub timeout: Duration,
    /// Most decompressed bytes read out of a zip-based document, all its parts together.
    pub max_unzipped_bytes: u64,
    /// Address-space limit of the PDF child process.
    pub max_memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text_bytes: 64 * 1024,
            max_input_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            max_unzipped_bytes: 64 * 1024 * 1024,
            max_memory_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Text taken out of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// At most `Limits::max_text_bytes` bytes. Empty when the document has no text (a scanned PDF).
    pub text: String,
    /// The document had more text than `text` holds.
    pub truncated: bool,
    /// Pages (PDF), sheets (xlsx/ods) or slides (pptx/odp) whose text was read: all of them unless
    /// `truncated`. `None` for flowing text (docx, odt, HTML).
    pub pages: Option<usize>,
}

impl Extracted {
    /// The text as one block for a model, between lines naming the file, saying where it was cut.
    pub fn render(&self, filename: &str, kind: DocKind) -> String {
        let unit = match kind {
            DocKind::Xlsx | DocKind::Ods => "sheet",
            DocKind::Pptx | DocKind::Odp => "slide",
            _ => "page",
        };
        let about = match self.pages {
            Some(1) => format!("{kind}, 1 {unit}"),
            Some(n) if self.truncated => format!("{kind}, {n}+ {unit}s"),
            Some(n) => format!("{kind}, {n} {unit}s"),
            None => kind.to_string(),
        };
        if self.text.trim().is_empty() {
            let why = if kind == DocKind::Pdf { "; it may be scanned images" } else { "" };
            return format!("[Document {filename} ({about}): no extractable text{why}]");
        }
        let cut = if self.truncated { "\n[Text cut here: the document is longer than shown]" } else { "" };
        format!("[Document {filename} ({about})]\n{}{cut}\n[End of document {filename}]", self.text)
    }
}

/// What the caller should do with a document that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The document itself is the problem and the sender can fix it: refuse the request (400) with
    /// the error's text.
    Refuse,
    /// The server cannot read it right now (a missing tool, a bug): name the file only, log why.
    NameOnly,
    /// Too many documents are being read: the request may be retried shortly (503).
    Busy,
}

/// Why a document's text could not be extracted. The `Display` texts are safe to show users; the
/// `detail` fields are for logs only.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("encrypted {0}: cannot extract text without the password")]
    Encrypted(DocKind),
    #[error("corrupt {kind}: {reason}")]
    Corrupt { kind: DocKind, reason: &'static str },
    #[error("document too large: {0}")]
    TooLarge(String),
    #[error("document text extraction timed out after {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("{kind} text extraction is not available on this server")]
    Unavailable { kind: DocKind, detail: String },
    #[error("the document could not be read")]
    Internal { detail: String },
    #[error("too many documents are being read; try again shortly")]
    Busy,
}

impl DocError {
    pub fn disposition(&self) -> Disposition {
        match self {
            DocError::Encrypted(_) | DocError::Corrupt { .. } | DocError::TooLarge(_) | DocError::Timeout(_) => {
                Disposition::Refuse
            }
            DocError::Unavailable { .. } | DocError::Internal { .. } => Disposition::NameOnly,
            DocError::Busy => Disposition::Busy,
        }
    }

    fn io(e: std::io::Error) -> Self {
        DocError::Internal { detail: format!("reading the document: {e}") }
    }
}

/// `n` bytes for messages: bytes, KiB or MiB (one decimal).
fn size_text(n: u64) -> String {
    match n {
        0..1024 => format!("{n} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

const OOXML_MIMES: &[(&str, DocKind)] = &[
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", DocKind::Docx),
    ("application/vnd.ms-word.document.macroenabled.12", DocKind::Docx),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", DocKind::Xlsx),
    ("application/vnd.ms-excel.sheet.macroenabled.12", DocKind::Xlsx),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation", DocKind::Pptx),
    ("application/vnd.ms-powerpoint.presentation.macroenabled.12", DocKind::Pptx),
    ("application/vnd.oasis.opendocument.text", DocKind::Odt),
    ("application/vnd.oasis.opendocument.spreadsheet", DocKind::Ods),
    ("application/vnd.oasis.opendocument.presentation", DocKind::Odp),
];

/// The kind a sender declared, by MIME type or else by extension.
fn declared_kind(mime: &str, name: &str) -> Option<DocKind> {
    let mime = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let by_mime = match mime.as_str() {
        "application/pdf" => Some(DocKind::Pdf),
        "text/html" | "application/xhtml+xml" => Some(DocKind::Html),
        m => OOXML_MIMES.iter().find(|(t, _)| *t == m).map(|(_, k)| *k),
    };
    by_mime.or_else(|| {
        let ext = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "pdf" => DocKind::Pdf,
            "docx" | "docm" => DocKind::Docx,
            "xlsx" | "xlsm" => DocKind::Xlsx,
            "pptx" | "pptm" => DocKind::Pptx,
            "odt" => DocKind::Odt,
            "ods" => DocKind::Ods,
            "odp" => DocKind::Odp,
            "html" | "htm" | "xhtml" => DocKind::Html,
            _ => return None,
        })
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The kind of a zip from its first entries: ODF stores a `mimetype` entry first, uncompressed;
/// OOXML names its parts in the local headers (`word/`, `xl/`, `ppt/`).
fn zip_kind(head: &[u8]) -> Option<DocKind> {
    // Local file header: name length at 26, extra length at 28, name at 30, then the data.
    if head.len() > 38 && &head[30..38] == b"mimetype" {
        let name_len = u16::from_le_bytes([head[26], head[27]]) as usize;
        let extra_len = u16::from_le_bytes([head[28], head[29]]) as usize;
        let size = u32::from_le_bytes([head[18], head[19], head[20], head[21]]) as usize;
        let start = 30 + name_len + extra_len;
        let rest = head.get(start..).unwrap_or_default();
        const ODF: &[(&[u8], DocKind)] = &[
            (b"application/vnd.oasis.opendocument.text", DocKind::Odt),
            (b"application/vnd.oasis.opendocument.spreadsheet", DocKind::Ods),
            (b"application/vnd.oasis.opendocument.presentation", DocKind::Odp),
        ];
        // The bare types only: `…text-template` and friends are other kinds. The size is in the
        // header unless the writer streamed the entry (then the type ends where `PK` begins).
        let is = |m: &[u8]| match size {
            0 => rest.strip_prefix(m).is_some_and(|after| after.is_empty() || after.starts_with(b"PK")),
            n => rest.get(..n) == Some(m),
        };
        return ODF.iter().find(|(m, _)| is(m)).map(|(_, k)| *k);
    }
    let found = |n: &[u8]| find(head, n).is_some();
    if found(b"word/document.xml") {
        Some(DocKind::Docx)
    } else if found(b"xl/workbook.xml") {
        Some(DocKind::Xlsx)
    } else if found(b"ppt/presentation.xml") {
        Some(DocKind::Pptx)
    } else if found(b"[Content_Types].xml") || found(b"_rels/.rels") {
        [(&b"word/"[..], DocKind::Docx), (b"xl/", DocKind::Xlsx), (b"ppt/", DocKind::Pptx)]
            .iter()
            .filter_map(|(n, k)| find(head, n).map(|at| (at, *k)))
            .min_by_key(|(at, _)| *at)
            .map(|(_, k)| k)
    } else {
        None
    }
}

fn looks_like_html(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    let lower: Vec<u8> = head[start..].iter().take(64).map(u8::to_ascii_lowercase).collect();
    lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html")
}

const CFB_MAGIC: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";

/// Which kind of document this is, from its first bytes (see `attachments::SNIFF_BYTES`) first and
/// the declared MIME type or file name second; `None` for anything else (it stays named only).
///
/// Bytes win: a PDF named `.txt` is a PDF, a zip named `.pdf` is not. The name decides only when
/// the bytes say nothing certain, so a damaged file named `.docx` is still a docx (and extraction
/// then reports it as corrupt). An OLE container declared as OOXML is a password-protected office
/// file, and extraction says so; legacy `.doc`/`.xls` are not supported.
pub fn detect(head: &[u8], mime: &str, name: &str) -> Option<DocKind> {
    let declared = declared_kind(mime, name);
    if find(&head[..head.len().min(1024)], b"%PDF-").is_some() {
        return Some(DocKind::Pdf);
    }
    if head.starts_with(b"PK\x03\x04") {
        return zip_kind(head).or(declared.filter(|k| k.is_zip()));
    }
    if head.starts_with(CFB_MAGIC) {
        return declared.filter(|k| k.is_ooxml());
    }
    if looks_like_html(head) {
        return Some(DocKind::Html);
    }
    match declared {
        // Text declared as HTML; binary bytes are something else wearing the name.
        Some(DocKind::Html) => (!head.contains(&0)).then_some(DocKind::Html),
        // Bytes another format claims (an image named .pdf) are that format.
        Some(k) if infer::get(head).is_none() => Some(k),
        _ => None,
    }
}

/// [`detect`] on a file: reads its first bytes.
pub async fn detect_file(path: &Path, mime: &str, name: &str) -> std::io::Result<Option<DocKind>> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(path).await?;
    let mut head = Vec::with_capacity(crate::attachments::SNIFF_BYTES);
    f.take(crate::attachments::SNIFF_BYTES as u64).read_to_end(&mut head).await?;
    Ok(detect(&head, mime, name))
}

/// The server's document reader: limits, tools and the bound on concurrent extractions.
#[derive(Debug)]
pub struct Reader {
    limits: Limits,
    tools: PdfTools,
    /// One permit per extraction in progress. Why a bound: each PDF is a child process of up to
    /// `max_memory_bytes` of address space, each office document a blocking-pool thread with up
    /// to `max_unzipped_bytes` in flight; a burst of uploads must not multiply that.
    permits: Arc<Semaphore>,
}

impl Reader {
    /// A reader allowing `max_concurrent` extractions at once (at least one). Looks the PDF tools
    /// up on `PATH` now and says at once when one is missing.
    pub fn new(limits: Limits, max_concurrent: usize) -> Self {
        Self::with_tools(limits, max_concurrent, PdfTools::find())
    }

    /// A reader using these programs (tests use it to run without `pdftotext`).
    pub fn with_tools(limits: Limits, max_concurrent: usize, tools: PdfTools) -> Self {
        match (&tools.pdftotext, &tools.prlimit) {
            (None, _) => tracing::warn!(
                "pdftotext not found (Debian package poppler-utils): PDF attachments will be named only, not read"
            ),
            (Some(_), None) => {
                tracing::warn!("prlimit not found (util-linux): pdftotext will run without a memory limit")
            }
            _ => {}
        }
        Self { limits, tools, permits: Arc::new(Semaphore::new(max_concurrent.max(1))) }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// [`extract_text`] under the reader's limits, once a permit is free. Waits for one at most
    /// `limits.timeout`, then answers [`DocError::Busy`].
    pub async fn extract(&self, path: &Path, kind: DocKind) -> Result<Extracted, DocError> {
        let wait = tokio::time::timeout(self.limits.timeout, self.permits.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = wait else {
            return Err(DocError::Busy);
        };
        extract_with(path, kind, &self.limits, &self.tools, Some(permit)).await
    }
}

/// The text of a document, at most `limits.max_text_bytes`, within `limits.timeout`, outside any
/// [`Reader`] (tests, `examples/doc_text.rs`).
///
/// Never blocks the runtime: PDF runs in a child process awaited asynchronously, the rest on the
/// blocking pool. A panic in a parser is caught there (it becomes `Internal`), and the parser
/// checks the deadline on every read, so a timed-out worker stops soon after.
pub async fn extract_text(path: &Path, kind: DocKind, limits: &Limits) -> Result<Extracted, DocError> {
    extract_with(path, kind, limits, &PdfTools::find(), None).await
}

/// The extraction itself; `permit` is held until the work it admits has stopped: a PDF child is
/// killed when this future is dropped, while a blocking worker keeps its permit until it returns.
async fn extract_with(
    path: &Path,
    kind: DocKind,
    limits: &Limits,
    tools: &PdfTools,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Extracted, DocError> {
    let size = tokio::fs::metadata(path).await.map_err(DocError::io)?.len();
    if size > limits.max_input_bytes {
        return Err(DocError::TooLarge(format!(
            "the file is {} (at most {} can be read)",
            size_text(size),
            size_text(limits.max_input_bytes)
        )));
    }
    let started = tokio::time::Instant::now();
    let deadline = started + limits.timeout;
    if kind == DocKind::Pdf {
        let result = pdf::extract(path, tools, limits, deadline).await;
        drop(permit);
        return result;
    }
    let (owned_path, owned_limits): (PathBuf, Limits) = (path.to_path_buf(), limits.clone());
    let std_deadline = deadline.into_std();
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match kind {
            DocKind::Html => html::extract_file(&owned_path, &owned_limits, std_deadline),
            _ => office::extract(&owned_path, kind, &owned_limits, std_deadline),
        }
    });
    // The worker stops itself at the deadline; the grace covers a read that is slow to return.
    match tokio::time::timeout_at(deadline + Duration::from_secs(1), work).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => {
            Err(DocError::Internal { detail: format!("{kind} extractor panicked: {join}") })
        }
        Ok(Err(join)) => Err(DocError::Internal { detail: format!("{kind} extractor did not finish: {join}") }),
        Err(_) => Err(DocError::Timeout(limits.timeout)),
    }
}

/// Collects text up to a byte cap, tidying whitespace as it goes: no spaces before a line break,
/// at most one blank line in a row, nothing once full.
struct TextSink {
    out: String,
    cap: usize,
    truncated: bool,
}

impl TextSink {
    fn new(cap: usize) -> Self {
        Self { out: String::new(), cap, truncated: false }
    }

    fn is_full(&self) -> bool {
        self.truncated
    }

    fn push_str(&mut self, s: &str) {
        if self.truncated || s.is_empty() {
            return;
        }
        let room = self.cap.saturating_sub(self.out.len());
        if s.len() <= room {
            self.out.push_str(s);
        } else {
            self.out.push_str(&s[..floor_char_boundary(s, room)]);
            self.truncated = true;
        }
    }

    fn push_char(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0u8; 4]));
    }

    /// A single space, unless at the start of a line or after one.
    fn space(&mut self) {
        if self.out.chars().next_back().is_some_and(|c| !c.is_whitespace()) {
            self.push_char(' ');
        }
    }

    /// A cell separator (also at the start of a line: the first cell may be empty).
    fn tab(&mut self) {
        self.push_char('\t');
    }

    fn newline(&mut self) {
        if self.truncated {
            return;
        }
        let kept = self.out.trim_end_matches([' ', '\t']).len();
        self.out.truncate(kept);
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.push_char('\n');
        }
    }

    fn blank_line(&mut self) {
        self.newline();
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.push_char('\n');
        }
    }

    /// A `[Page N]`-style heading on a line of its own, after a blank line.
    fn heading(&mut self, text: &str) {
        self.blank_line();
        self.push_str(text);
        self.newline();
    }

    fn finish(self) -> (String, bool) {
        let mut out = self.out;
        out.truncate(out.trim_end().len());
        (out, self.truncated)
    }
}

/// The largest index ≤ `i` on a character boundary of `s`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_caps_on_a_char_boundary() {
        let mut s = TextSink::new(5);
        s.push_str("ab");
        s.push_str("çd€");
        assert!(s.is_full());
        let (text, truncated) = s.finish();
        assert_eq!(text, "abçd");
        assert!(truncated);
    }

    #[test]
    fn sink_tidies_whitespace() {
        let mut s = TextSink::new(100);
        s.newline();
        s.space();
        s.push_str("a");
        s.tab();
        s.push_str("b \t");
        s.newline();
        s.newline();
        s.blank_line();
        s.blank_line();
        s.heading("[Page 2]");
        s.push_str("c");
        assert_eq!(s.finish(), ("a\tb\n\n[Page 2]\nc".to_string(), false));
    }

    #[test]
    fn detects_from_bytes_first() {
        assert_eq!(detect(b"%PDF-1.7\n...", "text/plain", "notes.txt"), Some(DocKind::Pdf));
        assert_eq!(detect(b"\xEF\xBB\xBF\n <!DOCTYPE html><p>x", "", "page"), Some(DocKind::Html));
        assert_eq!(detect(b"<p>hello</p>", "text/html; charset=utf-8", "x"), Some(DocKind::Html));
        assert_eq!(detect(b"<p>hello</p>", "text/plain", "x.txt"), None);
        // Damaged bytes under a document's name are that document (extraction calls it corrupt)…
        assert_eq!(detect(b"garbage", "application/octet-stream", "a.pdf"), Some(DocKind::Pdf));
        // …but bytes of another known format are not.
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "", "a.pdf"), None);
        assert_eq!(detect(b"GIF89a", "application/pdf", "a.pdf"), None);
        assert_eq!(detect(b"plain words", "", "a.txt"), None);
        // A password-protected docx is an OLE container; a legacy .doc is not supported.
        assert_eq!(detect(CFB_MAGIC, "", "secret.docx"), Some(DocKind::Docx));
        assert_eq!(detect(CFB_MAGIC, "application/msword", "old.doc"), None);
    }

    #[test]
    fn detects_zip_documents_from_their_entries() {
        for (kind, bytes) in [
            (DocKind::Docx, fixtures::docx(&["x"])),
            (DocKind::Xlsx, fixtures::xlsx(&[("S", &[&["x"]])])),
            (DocKind::Pptx, fixtures::pptx(&["x"])),
            (DocKind::Odt, fixtures::odt(&["x"])),
            (DocKind::Ods, fixtures::ods(&[("S", &[&["x"]])])),
            (DocKind::Odp, fixtures::odp(&["x"])),
        ] {
            // The declared name is ignored when the entries say what it is.
            assert_eq!(detect(&bytes, "application/zip", "upload.bin"), Some(kind), "{kind}");
        }
        let plain = fixtures::zip(&[("readme.txt", b"hi")]);
        assert_eq!(detect(&plain, "application/zip", "a.zip"), None);
        assert_eq!(detect(&plain, "", "a.docx"), Some(DocKind::Docx));
        assert_eq!(detect(&plain, "", "a.pdf"), None);
        let template = fixtures::zip_odf("application/vnd.oasis.opendocument.text-template", &[]);
        assert_eq!(detect(&template, "", "t.ott"), None);
    }

    #[test]
    fn renders_with_markers() {
        let e = Extracted { text: "hello".into(), truncated: true, pages: Some(3) };
        assert_eq!(
            e.render("r.pdf", DocKind::Pdf),
            "[Document r.pdf (PDF, 3+ pages)]\nhello\n[Text cut here: the document is longer than shown]\n[End of document r.pdf]"
        );
        let e = Extracted { text: String::new(), truncated: false, pages: Some(2) };
        assert_eq!(
            e.render("s.pdf", DocKind::Pdf),
            "[Document s.pdf (PDF, 2 pages): no extractable text; it may be scanned images]"
        );
        let e = Extracted { text: "x".into(), truncated: false, pages: Some(1) };
        assert!(e.render("b.xlsx", DocKind::Xlsx).starts_with("[Document b.xlsx (xlsx, 1 sheet)]\n"));
    }

    #[test]
    fn errors_say_what_to_do() {
        assert_eq!(
            DocError::Encrypted(DocKind::Pdf).to_string(),
            "encrypted PDF: cannot extract text without the password"
        );
        assert_eq!(DocError::Encrypted(DocKind::Pdf).disposition(), Disposition::Refuse);
        let e = DocError::Unavailable { kind: DocKind::Pdf, detail: "pdftotext not found".into() };
        assert_eq!(e.to_string(), "PDF text extraction is not available on this server");
        assert_eq!(e.disposition(), Disposition::NameOnly);
        assert_eq!(
            DocError::Timeout(Duration::from_secs(30)).to_string(),
            "document text extraction timed out after 30 s"
        );
    }

    #[tokio::test]
    async fn a_reader_admits_a_bounded_number_of_extractions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("page.html");
        std::fs::write(&p, "<p>admitted</p>").unwrap();
        let limits = Limits { timeout: Duration::from_millis(100), ..Limits::default() };
        let reader = Reader::new(limits, 1);
        let held = reader.permits.clone().acquire_owned().await.unwrap();
        let err = reader.extract(&p, DocKind::Html).await.unwrap_err();
        assert!(matches!(err, DocError::Busy), "{err:?}");
        assert_eq!(err.disposition(), Disposition::Busy);
        drop(held);
        assert_eq!(reader.extract(&p, DocKind::Html).await.unwrap().text, "admitted");
        assert_eq!(reader.permits.available_permits(), 1, "the permit is back once the work is done");
    }

    #[tokio::test]
    async fn refuses_a_file_over_the_input_cap_before_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.html");
        std::fs::write(&p, vec![b'a'; 2000]).unwrap();
        let limits = Limits { max_input_bytes: 1000, ..Limits::default() };
        let err = extract_text(&p, DocKind::Html, &limits).await.unwrap_err();
        assert!(matches!(err, DocError::TooLarge(_)), "{err:?}");
        assert_eq!(err.to_string(), "document too large: the file is 2.0 KiB (at most 1000 bytes can be read)");
    }
}
