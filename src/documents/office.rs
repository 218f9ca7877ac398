//! Office documents: OOXML (docx, xlsx, pptx) and ODF (odt, ods, odp) are zip files of XML.
//!
//! Runs on a blocking thread. Reads only the parts that hold text, each through a [`Metered`]
//! reader that charges one shared budget of decompressed bytes (a zip bomb's size is not what its
//! headers claim) and checks the deadline on every read, so a hostile file stops at whichever bound
//! it meets first. XML is streamed with `quick-xml` into the text sink, never built into a tree;
//! element names are matched by local name, so odd namespace prefixes do not matter.
//!
//! Not read: headers, footers, footnotes and comments of docx; speaker notes; embedded objects;
//! number formats (a date cell shows its serial number).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;
use std::time::{Duration, Instant};

use quick_xml::events::{BytesStart, Event};
use zip::ZipArchive;
use zip::result::ZipError;

use super::{CFB_MAGIC, DocError, DocKind, Extracted, Limits, TextSink, size_text};

/// More entries than any real document has. `zip` parses the whole central directory up front,
/// so its size is checked from the end-of-central-directory record before that.
const MAX_ZIP_ENTRIES: usize = 10_000;
/// A central directory larger than this (real documents have a few KiB) is refused unread.
const MAX_CENTRAL_DIRECTORY: u64 = 4 * 1024 * 1024;
/// Most sheets or slides read (each is one more part to open).
const MAX_PARTS: usize = 1000;
/// Most empty cells marked by tabs before a value (a cell at column XFD must not write 16k tabs).
const MAX_COLUMN_GAP: usize = 32;

/// Decompressed bytes still allowed, shared by every part of one document.
struct Budget {
    left: u64,
    deadline: Instant,
    exceeded: bool,
    timed_out: bool,
}

/// A part being read: charges the budget and watches the deadline.
struct Metered<'a, R> {
    inner: R,
    budget: &'a mut Budget,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() >= self.budget.deadline {
            self.budget.timed_out = true;
            return Err(std::io::Error::other("deadline passed"));
        }
        // One byte past the budget tells "exactly at the limit" from "over it".
        let want = buf.len().min(usize::try_from(self.budget.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.budget.left {
            self.budget.exceeded = true;
            return Err(std::io::Error::other("decompressed size limit"));
        }
        self.budget.left -= n as u64;
        Ok(n)
    }
}

/// One document being read.
struct Doc<R> {
    zip: ZipArchive<R>,
    kind: DocKind,
    budget: Budget,
    max_unzipped: u64,
}

/// A simplified XML event for the per-format walkers.
enum Node<'a> {
    Open(&'a BytesStart<'a>),
    /// An empty element (`<w:br/>`): opened and closed at once.
    Leaf(&'a BytesStart<'a>),
    Close(&'a str),
    Text(&'a str),
}

/// Whether the walker wants more of the part.
#[derive(PartialEq, Eq)]
enum Flow {
    More,
    Stop,
}

fn local<'a>(e: &'a BytesStart<'_>) -> &'a str {
    let name = e.name();
    let full: &str = name.0;
    full.rsplit(':').next().unwrap_or(full)
}

/// The value of an attribute by local name (`r:id` and `id` both answer to `id`), unescaped.
fn attr(e: &BytesStart<'_>, wanted: &str, prefixed: bool) -> Option<String> {
    e.attributes().with_checks(false).flatten().find_map(|a| {
        let key: &str = a.key.0;
        let (prefix, name) = key.rsplit_once(':').unwrap_or(("", key));
        (name == wanted && prefixed != prefix.is_empty())
            .then(|| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map(|v| v.into_owned()).unwrap_or_default())
    })
}

impl<R: Read + Seek> Doc<R> {
    fn corrupt(&self, reason: &'static str) -> DocError {
        DocError::Corrupt { kind: self.kind, reason }
    }

    fn too_large(&self) -> DocError {
        DocError::TooLarge(format!("more than {} of uncompressed content", size_text(self.max_unzipped)))
    }

    fn has(&self, name: &str) -> bool {
        self.zip.index_for_name(name).is_some()
    }

    /// Streams the XML part `name` through `on`; `Ok(false)` if there is no such part.
    fn walk(&mut self, name: &str, mut on: impl FnMut(Node<'_>) -> Flow) -> Result<bool, DocError> {
        let kind = self.kind;
        let entry = match self.zip.by_name(name) {
            Ok(e) => e,
            Err(ZipError::FileNotFound) => return Ok(false),
            Err(ZipError::InvalidPassword) => return Err(DocError::Encrypted(kind)),
            Err(ZipError::UnsupportedArchive(m)) if m.contains("encrypt") || m.contains("Password") => {
                return Err(DocError::Encrypted(kind));
            }
            Err(e) => {
                tracing::debug!(error = %e, part = name, "zip entry unreadable");
                return Err(DocError::Corrupt { kind, reason: "a part of the file cannot be unpacked" });
            }
        };
        // The header's size can lie (the meter catches that) but an honest one fails fast.
        if entry.size() > self.budget.left {
            return Err(DocError::TooLarge(format!(
                "more than {} of uncompressed content",
                size_text(self.max_unzipped)
            )));
        }
        let metered = Metered { inner: entry, budget: &mut self.budget };
        let result = walk_xml(BufReader::new(metered), &mut on);
        match result {
            Ok(()) => Ok(true),
            Err(_) if self.budget.timed_out => Err(DocError::Timeout(Duration::ZERO)),
            Err(_) if self.budget.exceeded => Err(self.too_large()),
            Err(e) => {
                tracing::debug!(error = %e, part = name, "malformed XML");
                Err(self.corrupt("malformed XML inside"))
            }
        }
    }
}

/// Streams XML events from `src` into `on` until the end or `Flow::Stop`.
fn walk_xml(src: impl BufRead, on: &mut impl FnMut(Node<'_>) -> Flow) -> Result<(), quick_xml::Error> {
    let mut reader = quick_xml::Reader::from_reader(src);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.allow_dangling_amp = true;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let flow = match reader.read_event_into(&mut buf)? {
            Event::Start(e) => on(Node::Open(&e)),
            Event::Empty(e) => on(Node::Leaf(&e)),
            Event::End(e) => {
                let name = e.name();
                let full: &str = name.0;
                on(Node::Close(full.rsplit(':').next().unwrap_or(full)))
            }
            Event::Text(t) => on(Node::Text(&t.xml10_content())),
            Event::CData(t) => on(Node::Text(&t.xml10_content())),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c.to_string()),
                    Ok(None) => quick_xml::escape::resolve_xml_entity(&r).map(str::to_string),
                    Err(_) => None,
                };
                match resolved {
                    Some(s) => on(Node::Text(&s)),
                    None => Flow::More,
                }
            }
            Event::Eof => return Ok(()),
            _ => Flow::More,
        };
        if flow == Flow::Stop {
            return Ok(());
        }
    }
}

/// Skips whole subtrees (`*Pr` property blocks, `mc:Fallback` duplicates, deleted text, comments):
/// feed every node through [`Skip::hides`] before acting on it.
#[derive(Default)]
struct Skip {
    depth: usize,
}

impl Skip {
    fn hides(&mut self, node: &Node<'_>, skipped: impl Fn(&str) -> bool) -> bool {
        match node {
            Node::Open(e) if self.depth > 0 || skipped(local(e)) => {
                self.depth += 1;
                true
            }
            Node::Close(_) if self.depth > 0 => {
                self.depth -= 1;
                true
            }
            Node::Leaf(e) => self.depth > 0 || skipped(local(e)),
            Node::Text(_) => self.depth > 0,
            _ => false,
        }
    }
}

pub(super) fn extract(path: &Path, kind: DocKind, limits: &Limits, deadline: Instant) -> Result<Extracted, DocError> {
    let mut file = File::open(path).map_err(DocError::io)?;
    let mut magic = [0u8; 8];
    let n = file.read(&mut magic).map_err(DocError::io)?;
    // Password-protected OOXML is an OLE container holding the encrypted package.
    if n == 8 && magic == CFB_MAGIC {
        return Err(DocError::Encrypted(kind));
    }
    check_central_directory(&mut file, kind)?;
    file.rewind().map_err(DocError::io)?;
    let zip = ZipArchive::new(BufReader::new(file)).map_err(|e| {
        tracing::debug!(error = %e, "not a zip");
        DocError::Corrupt { kind, reason: "not a zip archive" }
    })?;
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(DocError::TooLarge(format!("more than {MAX_ZIP_ENTRIES} files inside the {kind}")));
    }
    let budget = Budget { left: limits.max_unzipped_bytes, deadline, exceeded: false, timed_out: false };
    let mut doc = Doc { zip, kind, budget, max_unzipped: limits.max_unzipped_bytes };
    let mut sink = TextSink::new(limits.max_text_bytes);
    let pages = match kind {
        DocKind::Docx => docx(&mut doc, &mut sink).map(|()| None),
        DocKind::Xlsx => xlsx(&mut doc, &mut sink).map(Some),
        DocKind::Pptx => pptx(&mut doc, &mut sink).map(Some),
        DocKind::Odt | DocKind::Ods | DocKind::Odp => odf(&mut doc, &mut sink),
        DocKind::Pdf | DocKind::Html => Err(DocError::Internal { detail: format!("{kind} is not a zip format") }),
    };
    let pages = pages.map_err(|e| match e {
        DocError::Timeout(_) => DocError::Timeout(limits.timeout),
        e => e,
    })?;
    let (text, truncated) = sink.finish();
    Ok(Extracted { text, truncated, pages })
}

/// Refuses a zip whose end-of-central-directory record announces more entries or a larger central
/// directory than a document has, before `zip` allocates for them. A file without the record is
/// left for `zip` to call corrupt.
fn check_central_directory(file: &mut File, kind: DocKind) -> Result<(), DocError> {
    use std::io::SeekFrom;
    // The record is 22 bytes plus a comment of at most 65535.
    let len = file.seek(SeekFrom::End(0)).map_err(DocError::io)?;
    let tail_len = len.min(22 + 65_535);
    file.seek(SeekFrom::Start(len - tail_len)).map_err(DocError::io)?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    file.take(tail_len).read_to_end(&mut tail).map_err(DocError::io)?;
    let Some(at) = tail.windows(4).rposition(|w| w == b"PK\x05\x06") else { return Ok(()) };
    let Some(eocd) = tail.get(at..at + 22) else { return Ok(()) };
    let entries = u16::from_le_bytes([eocd[10], eocd[11]]);
    let cd_size = u32::from_le_bytes([eocd[12], eocd[13], eocd[14], eocd[15]]);
    // 0xFFFF and 0xFFFFFFFF mean "see the zip64 record": left to `zip`, then the entry count check.
    if usize::from(entries) > MAX_ZIP_ENTRIES && entries != u16::MAX {
        return Err(DocError::TooLarge(format!("more than {MAX_ZIP_ENTRIES} files inside the {kind}")));
    }
    if u64::from(cd_size) > MAX_CENTRAL_DIRECTORY && cd_size != u32::MAX {
        return Err(DocError::TooLarge(format!(
            "the {kind}'s table of contents is over {}",
            size_text(MAX_CENTRAL_DIRECTORY)
        )));
    }
    Ok(())
}

/// Word: `word/document.xml`. Text is in `t` elements of runs; paragraphs end lines; table cells
/// are tab-separated.
fn docx<R: Read + Seek>(doc: &mut Doc<R>, sink: &mut TextSink) -> Result<(), DocError> {
    let mut runs = RunText::default();
    if !doc.walk("word/document.xml", |n| runs.on(n, sink))? {
        return Err(doc.corrupt("word/document.xml is missing"));
    }
    Ok(())
}

/// Text of WordprocessingML bodies and DrawingML shapes (slides): `t` holds text; `p` ends a
/// paragraph; `tab`, `br`, `cr` are characters; `tc`/`tr` are table cells and rows (paragraphs in
/// a cell are joined by spaces). Property blocks (`*Pr`), the VML fallback copy of drawings, and
/// deleted or moved-away text are skipped.
#[derive(Default)]
struct RunText {
    skip: Skip,
    in_t: bool,
    cell: Cell,
}

impl RunText {
    fn on(&mut self, n: Node<'_>, sink: &mut TextSink) -> Flow {
        let skipped = |l: &str| l.ends_with("Pr") || matches!(l, "Fallback" | "del" | "moveFrom" | "instrText");
        if self.skip.hides(&n, skipped) {
            return Flow::More;
        }
        match n {
            Node::Open(e) => match local(e) {
                "t" => self.in_t = true,
                "p" => self.cell.paragraph(sink),
                "tc" => self.cell.open(),
                "tab" => sink.push_char('\t'),
                "br" | "cr" => sink.newline(),
                _ => {}
            },
            Node::Leaf(e) => match local(e) {
                "tab" => sink.push_char('\t'),
                "br" | "cr" => sink.newline(),
                _ => {}
            },
            Node::Close("t") => self.in_t = false,
            Node::Text(t) if self.in_t => sink.push_str(t),
            Node::Close("p") => self.cell.end_paragraph(sink),
            Node::Close("tc") => self.cell.close(sink),
            Node::Close("tr") => sink.newline(),
            _ => {}
        }
        if sink.is_full() { Flow::Stop } else { Flow::More }
    }
}

/// Paragraphs inside table cells: one line per row, so a cell's paragraphs are joined by spaces
/// and cells by tabs.
#[derive(Default)]
struct Cell {
    depth: usize,
    has_paragraph: bool,
}

impl Cell {
    fn open(&mut self) {
        self.depth += 1;
        self.has_paragraph = false;
    }

    fn close(&mut self, sink: &mut TextSink) {
        self.depth = self.depth.saturating_sub(1);
        sink.tab();
    }

    fn paragraph(&mut self, sink: &mut TextSink) {
        if self.depth > 0 && self.has_paragraph {
            sink.space();
        }
        self.has_paragraph = true;
    }

    fn end_paragraph(&self, sink: &mut TextSink) {
        if self.depth == 0 {
            sink.newline();
        }
    }
}

/// `Relationship` targets of a `.rels` part by id, resolved against the folder `base`.
fn relationships<R: Read + Seek>(
    doc: &mut Doc<R>,
    rels: &str,
    base: &str,
) -> Result<HashMap<String, String>, DocError> {
    let mut map = HashMap::new();
    doc.walk(rels, |n| {
        if let Node::Open(e) | Node::Leaf(e) = n
            && local(e) == "Relationship"
            && let (Some(id), Some(target)) = (attr(e, "Id", false), attr(e, "Target", false))
        {
            map.insert(id, resolve_part(base, &target));
        }
        Flow::More
    })?;
    Ok(map)
}

/// A relationship target as a zip entry name: absolute (`/xl/x.xml`) or relative to `base`.
fn resolve_part(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = match target.strip_prefix('/') {
        Some(_) => Vec::new(),
        None => base.split('/').filter(|s| !s.is_empty()).collect(),
    };
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The parts named by `r:id` attributes of `list_elem` elements in `index`, in order; when that
/// says nothing, the entries `prefix<N>.xml` in number order.
fn ordered_parts<R: Read + Seek>(
    doc: &mut Doc<R>,
    index: &str,
    rels: &str,
    base: &str,
    list_elem: &str,
    prefix: &str,
) -> Result<Vec<(Option<String>, String)>, DocError> {
    let mut ids: Vec<(Option<String>, String)> = Vec::new();
    doc.walk(index, |n| {
        if let Node::Open(e) | Node::Leaf(e) = n
            && local(e) == list_elem
            && let Some(id) = attr(e, "id", true)
        {
            ids.push((attr(e, "name", false), id));
        }
        if ids.len() >= MAX_PARTS { Flow::Stop } else { Flow::More }
    })?;
    let rels = relationships(doc, rels, base)?;
    let mut parts: Vec<(Option<String>, String)> = ids
        .into_iter()
        .filter_map(|(name, id)| Some((name, rels.get(&id)?.clone())))
        .filter(|(_, p)| doc.has(p))
        .collect();
    if parts.is_empty() {
        let mut numbered: Vec<(u32, String)> = doc
            .zip
            .file_names()
            .flatten()
            .filter_map(|n| {
                let num = n.strip_prefix(prefix)?.strip_suffix(".xml")?.parse().ok()?;
                Some((num, n.into_owned()))
            })
            .collect();
        numbered.sort();
        parts = numbered.into_iter().take(MAX_PARTS).map(|(_, n)| (None, n)).collect();
    }
    Ok(parts)
}

/// Excel: each sheet from `xl/workbook.xml` in order, as `[Sheet NAME]` then rows of
/// tab-separated cells; strings come from `xl/sharedStrings.xml`.
fn xlsx<R: Read + Seek>(doc: &mut Doc<R>, sink: &mut TextSink) -> Result<usize, DocError> {
    let sheets =
        ordered_parts(doc, "xl/workbook.xml", "xl/_rels/workbook.xml.rels", "xl", "sheet", "xl/worksheets/sheet")?;
    if sheets.is_empty() {
        return Err(doc.corrupt("it has no worksheets"));
    }
    let shared = shared_strings(doc)?;
    let mut count = 0;
    for (i, (name, part)) in sheets.iter().enumerate() {
        if sink.is_full() {
            break;
        }
        count += 1;
        sink.heading(&format!("[Sheet {}]", name.clone().unwrap_or_else(|| (i + 1).to_string())));
        let mut cell = CellState::default();
        doc.walk(part, |n| {
            cell.on(n, &shared, sink);
            if sink.is_full() { Flow::Stop } else { Flow::More }
        })?;
    }
    Ok(count)
}

/// Strings of `xl/sharedStrings.xml` by index: the text of each `si`, without phonetic runs.
fn shared_strings<R: Read + Seek>(doc: &mut Doc<R>) -> Result<Vec<String>, DocError> {
    let mut out = Vec::new();
    let (mut cur, mut in_t, mut skip) = (String::new(), false, Skip::default());
    doc.walk("xl/sharedStrings.xml", |n| {
        if skip.hides(&n, |l| l == "rPh") {
            return Flow::More;
        }
        match n {
            Node::Open(e) if local(e) == "t" => in_t = true,
            Node::Close("t") => in_t = false,
            Node::Text(t) if in_t => cur.push_str(t),
            Node::Close("si") => out.push(std::mem::take(&mut cur)),
            Node::Leaf(e) if local(e) == "si" => out.push(String::new()),
            _ => {}
        }
        Flow::More
    })?;
    Ok(out)
}

/// One worksheet's cells: `c` (with `r="B3"` and type `t`), its value `v` or inline string `is/t`.
#[derive(Default)]
struct CellState {
    kind: String,
    col: Option<usize>,
    in_v: bool,
    in_t: bool,
    value: String,
    /// The next column to write in the current row.
    next_col: usize,
}

/// Column number (0-based) from a cell reference like `AB12`.
fn column_of(r: &str) -> Option<usize> {
    let letters = r.bytes().take_while(u8::is_ascii_alphabetic);
    let mut n = 0usize;
    for b in letters {
        n = n.checked_mul(26)?.checked_add((b.to_ascii_uppercase() - b'A') as usize + 1)?;
    }
    n.checked_sub(1)
}

impl CellState {
    fn on(&mut self, n: Node<'_>, shared: &[String], sink: &mut TextSink) {
        match n {
            Node::Open(e) if local(e) == "row" => {
                sink.newline();
                self.next_col = 0;
            }
            Node::Open(e) if local(e) == "c" => {
                self.kind = attr(e, "t", false).unwrap_or_default();
                self.col = attr(e, "r", false).as_deref().and_then(column_of);
                self.value.clear();
            }
            Node::Open(e) if local(e) == "v" => self.in_v = true,
            Node::Close("v") => self.in_v = false,
            Node::Open(e) if local(e) == "t" => self.in_t = true,
            Node::Close("t") => self.in_t = false,
            Node::Text(t) if self.in_v || self.in_t => self.value.push_str(t),
            Node::Close("c") => {
                let text = match self.kind.as_str() {
                    "s" => {
                        self.value.trim().parse::<usize>().ok().and_then(|i| shared.get(i)).cloned().unwrap_or_default()
                    }
                    "b" => (if self.value.trim() == "1" { "TRUE" } else { "FALSE" }).to_string(),
                    _ => std::mem::take(&mut self.value),
                };
                if text.is_empty() {
                    return;
                }
                let col = self.col.unwrap_or(self.next_col).max(self.next_col);
                let tabs = if self.next_col == 0 { col } else { col - self.next_col + 1 };
                for _ in 0..tabs.min(MAX_COLUMN_GAP) {
                    sink.push_char('\t');
                }
                // Cell text is one line: keep rows as rows.
                sink.push_str(&text.replace(['\n', '\r', '\t'], " "));
                self.next_col = col + 1;
            }
            _ => {}
        }
    }
}

/// PowerPoint: each slide from `ppt/presentation.xml` in order, as `[Slide N]` then its text.
fn pptx<R: Read + Seek>(doc: &mut Doc<R>, sink: &mut TextSink) -> Result<usize, DocError> {
    let slides = ordered_parts(
        doc,
        "ppt/presentation.xml",
        "ppt/_rels/presentation.xml.rels",
        "ppt",
        "sldId",
        "ppt/slides/slide",
    )?;
    if slides.is_empty() && !doc.has("ppt/presentation.xml") {
        return Err(doc.corrupt("ppt/presentation.xml is missing"));
    }
    let mut count = 0;
    for (i, (_, part)) in slides.iter().enumerate() {
        if sink.is_full() {
            break;
        }
        count += 1;
        sink.heading(&format!("[Slide {}]", i + 1));
        let mut runs = RunText::default();
        doc.walk(part, |n| runs.on(n, sink))?;
    }
    Ok(count)
}

/// OpenDocument: `content.xml`'s body. Paragraphs (`p`, `h`) hold the text; `s`, `tab` and
/// `line-break` are characters; spreadsheets start sheets with `[Sheet NAME]`, presentations
/// slides with `[Slide N]`. Repeated empty cells and rows are written once, not expanded.
fn odf<R: Read + Seek>(doc: &mut Doc<R>, sink: &mut TextSink) -> Result<Option<usize>, DocError> {
    // An encrypted package says so in its manifest; its content.xml is ciphertext.
    let mut encrypted = false;
    doc.walk("META-INF/manifest.xml", |n| {
        if let Node::Open(e) | Node::Leaf(e) = n
            && local(e) == "encryption-data"
        {
            encrypted = true;
            return Flow::Stop;
        }
        Flow::More
    })?;
    if encrypted {
        return Err(DocError::Encrypted(doc.kind));
    }
    let kind = doc.kind;
    let (mut pages, mut in_body, mut para, mut cell) = (0usize, false, 0usize, Cell::default());
    let mut skip = Skip::default();
    let found = doc.walk("content.xml", |n| {
        if let Node::Open(e) = &n
            && local(e) == "body"
        {
            in_body = true;
        }
        if !in_body || skip.hides(&n, |l| matches!(l, "tracked-changes" | "annotation" | "notes" | "forms")) {
            return Flow::More;
        }
        match n {
            Node::Open(e) => match local(e) {
                "p" | "h" => {
                    para += 1;
                    cell.paragraph(sink);
                }
                "table-cell" | "covered-table-cell" => cell.open(),
                "table" if kind == DocKind::Ods => {
                    pages += 1;
                    let name = attr(e, "name", true).unwrap_or_else(|| pages.to_string());
                    sink.heading(&format!("[Sheet {name}]"));
                }
                "page" if kind == DocKind::Odp => {
                    pages += 1;
                    sink.heading(&format!("[Slide {pages}]"));
                }
                _ => {}
            },
            Node::Leaf(e) => match local(e) {
                "s" => {
                    let count = attr(e, "c", true).and_then(|c| c.parse::<usize>().ok()).unwrap_or(1);
                    sink.push_str(&" ".repeat(count.clamp(1, 64)));
                }
                "tab" => sink.push_char('\t'),
                "line-break" => sink.newline(),
                "table-cell" | "covered-table-cell" => sink.tab(),
                _ => {}
            },
            Node::Text(t) if para > 0 => sink.push_str(t),
            Node::Close("p" | "h") => {
                para = para.saturating_sub(1);
                cell.end_paragraph(sink);
            }
            Node::Close("table-cell" | "covered-table-cell") => cell.close(sink),
            Node::Close("table-row") => sink.newline(),
            Node::Close("body") => in_body = false,
            _ => {}
        }
        if sink.is_full() { Flow::Stop } else { Flow::More }
    })?;
    if !found {
        return Err(doc.corrupt("content.xml is missing"));
    }
    Ok(matches!(kind, DocKind::Ods | DocKind::Odp).then_some(pages))
}

#[cfg(test)]
mod tests {
    use super::super::{extract_text, fixtures};
    use super::*;

    async fn extract_bytes(bytes: &[u8], kind: DocKind, limits: &Limits) -> Result<Extracted, DocError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc");
        std::fs::write(&p, bytes).unwrap();
        extract_text(&p, kind, limits).await
    }

    async fn text_of(bytes: &[u8], kind: DocKind) -> Extracted {
        extract_bytes(bytes, kind, &Limits::default()).await.unwrap()
    }

    #[tokio::test]
    async fn docx_paragraphs_tables_and_breaks() {
        let e = text_of(&fixtures::docx(&["Hello from the ocelot report", "Second paragraph"]), DocKind::Docx).await;
        assert_eq!(e.text, "Hello from the ocelot report\nSecond paragraph");
        assert_eq!(e.pages, None);

        let body = r#"<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>
            <w:r><w:t xml:space="preserve">a &amp; b </w:t></w:r><w:r><w:tab/><w:t>c&#233;</w:t><w:br/><w:t>d</w:t></w:r>
            <w:del><w:r><w:delText>deleted</w:delText></w:r></w:del></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>r1c1</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>r1c2</w:t></w:r></w:p></w:tc></w:tr>
            <w:tr><w:tc><w:p><w:r><w:t>r2c1</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>r2c2</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
            <w:p><w:r><mc:AlternateContent><mc:Choice><w:t>chosen</w:t></mc:Choice><mc:Fallback><w:t>fallback</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>"#;
        let e = text_of(&fixtures::docx_with_body(body), DocKind::Docx).await;
        assert_eq!(e.text, "a & b \tcé\nd\nr1c1\tr1c2\nr2c1\tr2c2\nchosen");
    }

    #[tokio::test]
    async fn xlsx_sheets_in_workbook_order_with_shared_and_inline_strings() {
        let e = text_of(
            &fixtures::xlsx(&[
                ("Budget", &[&["Item", "Cost"], &["Capybara food", "12.5"]]),
                ("Notes", &[&["", "gap before"]]),
            ]),
            DocKind::Xlsx,
        )
        .await;
        assert_eq!(e.text, "[Sheet Budget]\nItem\tCost\nCapybara food\t12.5\n\n[Sheet Notes]\n\tgap before");
        assert_eq!(e.pages, Some(2));
    }

    #[tokio::test]
    async fn pptx_slides_in_order() {
        let e = text_of(&fixtures::pptx(&["Quarterly axolotl review", "Thanks"]), DocKind::Pptx).await;
        assert_eq!(e.text, "[Slide 1]\nQuarterly axolotl review\n\n[Slide 2]\nThanks");
        assert_eq!(e.pages, Some(2));
    }

    #[tokio::test]
    async fn odf_text_spreadsheet_and_presentation() {
        let e = text_of(&fixtures::odt(&["The wombat memo", "Line two"]), DocKind::Odt).await;
        assert_eq!(e.text, "The wombat memo\nLine two");
        let e = text_of(&fixtures::ods(&[("Animals", &[&["Name", "Legs"], &["Emu", "2"]])]), DocKind::Ods).await;
        assert_eq!(e.text, "[Sheet Animals]\nName\tLegs\nEmu\t2");
        assert_eq!(e.pages, Some(1));
        let e = text_of(&fixtures::odp(&["Pangolin roadmap", "Questions"]), DocKind::Odp).await;
        assert_eq!(e.text, "[Slide 1]\nPangolin roadmap\n\n[Slide 2]\nQuestions");
        assert_eq!(e.pages, Some(2));
    }

    #[tokio::test]
    async fn odt_spaces_tabs_and_skipped_parts() {
        let body = r#"<text:h>Title</text:h><text:p>a<text:s text:c="3"/>b<text:tab/>c<text:line-break/>d<office:annotation><text:p>comment</text:p></office:annotation></text:p>"#;
        let e = text_of(&fixtures::odt_with_body(body), DocKind::Odt).await;
        assert_eq!(e.text, "Title\na   b\tc\nd");
    }

    #[tokio::test]
    async fn a_huge_document_is_cut_at_the_cap() {
        let paras: Vec<String> = (0..5000).map(|i| format!("Paragraph {i} about the marmot migration")).collect();
        let refs: Vec<&str> = paras.iter().map(String::as_str).collect();
        let limits = Limits { max_text_bytes: 2000, ..Limits::default() };
        let e = extract_bytes(&fixtures::docx(&refs), DocKind::Docx, &limits).await.unwrap();
        assert!(e.truncated);
        assert!(e.text.len() <= 2000 && e.text.len() > 1900, "{}", e.text.len());
        assert!(e.text.starts_with("Paragraph 0 about the marmot migration\nParagraph 1 "));
    }

    #[tokio::test]
    async fn a_zip_bomb_disguised_as_docx_is_refused_quickly() {
        // 200 MiB of one repeated byte compresses to about 200 KiB.
        let bomb = fixtures::docx_bomb(200 * 1024 * 1024);
        assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
        let started = std::time::Instant::now();
        let e = extract_bytes(&bomb, DocKind::Docx, &Limits::default()).await.unwrap_err();
        assert!(matches!(e, DocError::TooLarge(_)), "{e:?}");
        assert_eq!(e.to_string(), "document too large: more than 64.0 MiB of uncompressed content");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[tokio::test]
    async fn a_bomb_whose_header_lies_about_its_size_is_still_metered() {
        let bomb = fixtures::with_lying_sizes(&fixtures::docx_bomb(4 * 1024 * 1024));
        let limits = Limits { max_unzipped_bytes: 1024 * 1024, ..Limits::default() };
        let e = extract_bytes(&bomb, DocKind::Docx, &limits).await.unwrap_err();
        // Either the meter stops it, or the zip reader notices the size mismatch: never 4 MiB read.
        assert!(matches!(e, DocError::TooLarge(_) | DocError::Corrupt { .. }), "{e:?}");
    }

    #[test]
    fn the_meter_stops_at_the_budget_and_the_deadline() {
        let later = Instant::now() + Duration::from_secs(60);
        let mut budget = Budget { left: 1000, deadline: later, exceeded: false, timed_out: false };
        let mut sink = Vec::new();
        let r = Metered { inner: std::io::repeat(b' ').take(5000), budget: &mut budget }.read_to_end(&mut sink);
        assert!(r.is_err() && budget.exceeded && !budget.timed_out);
        assert!(sink.len() <= 1000, "{}", sink.len());

        let mut budget = Budget { left: 1000, deadline: later, exceeded: false, timed_out: false };
        let r = Metered { inner: std::io::repeat(b' ').take(1000), budget: &mut budget }.read_to_end(&mut Vec::new());
        assert_eq!(r.unwrap(), 1000, "exactly the budget is allowed");

        let mut budget = Budget { left: 1000, deadline: Instant::now(), exceeded: false, timed_out: false };
        let r = Metered { inner: std::io::repeat(b' ').take(10), budget: &mut budget }.read_to_end(&mut Vec::new());
        assert!(r.is_err() && budget.timed_out);
    }

    #[tokio::test]
    async fn too_many_entries_are_refused() {
        let names: Vec<String> = (0..=MAX_ZIP_ENTRIES).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let e = extract_bytes(&fixtures::zip(&entries), DocKind::Docx, &Limits::default()).await.unwrap_err();
        assert!(matches!(e, DocError::TooLarge(_)), "{e:?}");
    }

    #[tokio::test]
    async fn corrupt_and_encrypted_office_files_are_refused() {
        let e = extract_bytes(b"this is not a zip at all", DocKind::Docx, &Limits::default()).await.unwrap_err();
        assert_eq!(e.to_string(), "corrupt docx: not a zip archive");

        let e = extract_bytes(&fixtures::zip(&[("readme.txt", b"hi")]), DocKind::Docx, &Limits::default())
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "corrupt docx: word/document.xml is missing");

        let broken =
            fixtures::zip(&[("word/document.xml", b"<w:document><w:body><w:p><w:t>x</w:t></w:p><w:p attr=\"")]);
        let e = extract_bytes(&broken, DocKind::Docx, &Limits::default()).await.unwrap_err();
        assert_eq!(e.to_string(), "corrupt docx: malformed XML inside");

        let mut cfb = CFB_MAGIC.to_vec();
        cfb.extend([0u8; 504]);
        let e = extract_bytes(&cfb, DocKind::Xlsx, &Limits::default()).await.unwrap_err();
        assert_eq!(e.to_string(), "encrypted xlsx: cannot extract text without the password");

        let e = extract_bytes(&fixtures::odt_encrypted(), DocKind::Odt, &Limits::default()).await.unwrap_err();
        assert!(matches!(e, DocError::Encrypted(DocKind::Odt)), "{e:?}");
    }

    #[tokio::test]
    async fn deep_nesting_is_no_problem() {
        let body = format!("<w:p><w:r><w:t>deep okapi</w:t></w:r></w:p>{}", "<w:sdt>".repeat(200_000));
        let e = text_of(&fixtures::docx_with_body(&body), DocKind::Docx).await;
        assert_eq!(e.text, "deep okapi");
    }

    #[test]
    fn part_paths_and_columns() {
        assert_eq!(resolve_part("xl", "worksheets/sheet1.xml"), "xl/worksheets/sheet1.xml");
        assert_eq!(resolve_part("xl", "/xl/worksheets/sheet2.xml"), "xl/worksheets/sheet2.xml");
        assert_eq!(resolve_part("ppt/slides", "../media/a.png"), "ppt/media/a.png");
        assert_eq!(column_of("A1"), Some(0));
        assert_eq!(column_of("AB12"), Some(27));
        assert_eq!(column_of("12"), None);
    }
}
