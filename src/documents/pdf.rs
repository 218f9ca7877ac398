//! PDF text through poppler's `pdftotext` (Debian `poppler-utils`), run as a child process.
//!
//! Why a child process and not a Rust crate: poppler reads the PDFs people actually send (broken
//! xref tables, CID fonts, ToUnicode maps) and orders text by reading order; and a child can be
//! bounded from outside — address space and CPU time by `prlimit`, wall time by killing it — while a
//! parser inside the server can only be asked nicely: an endless loop or a huge allocation in a
//! pure-Rust parser would hold a blocking thread or the whole process's memory, and
//! `unsafe_code = "forbid"` leaves no `pre_exec`/`setrlimit` of our own. So `prlimit` (util-linux,
//! essential on Debian) sets the limits and then execs `pdftotext`.
//!
//! Must not: pass our environment to the child (it holds secrets), read more of its output than the
//! cap needs, or leave it running after we stop listening (`kill_on_drop`, and explicit kills).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

use super::{DocError, DocKind, Extracted, Limits, TextSink};

/// The first bytes of the child's stderr kept for classifying failures and for logs.
const STDERR_KEPT: usize = 4096;

/// Where the programs are, looked up once (when the server starts, for the server's reader).
#[derive(Debug, Clone, Default)]
pub struct PdfTools {
    /// `pdftotext`: without it, PDFs are named only.
    pub pdftotext: Option<PathBuf>,
    /// `prlimit`: without it, the child has no memory limit (only the timeout bounds it).
    pub prlimit: Option<PathBuf>,
}

impl PdfTools {
    /// Looks both programs up on `PATH` (a few `stat` calls).
    pub fn find() -> Self {
        Self { pdftotext: find_program("pdftotext"), prlimit: find_program("prlimit") }
    }
}

/// An executable called `name` on `PATH` (or the usual system directories when `PATH` is unset).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| is_executable(&m)))
}

#[cfg(unix)]
fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.is_file() && m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(m: &std::fs::Metadata) -> bool {
    m.is_file()
}

/// The signal that ended the child, if one did.
#[cfg(unix)]
fn signal_of(status: ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&status)
}

#[cfg(not(unix))]
fn signal_of(_status: ExitStatus) -> Option<i32> {
    None
}

/// Reads `r` to the end or until more than `cap` bytes; `true` if it stopped at the cap.
async fn read_capped(r: &mut (impl AsyncRead + Unpin), cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    r.take(cap as u64 + 1).read_to_end(&mut buf).await?;
    let capped = buf.len() > cap;
    buf.truncate(cap);
    Ok((buf, capped))
}

/// Reads `r` to the end (so the child never blocks on a full pipe), keeping the first bytes.
async fn drain_keeping_head(r: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    kept
}

pub(super) async fn extract(
    path: &Path,
    tools: &PdfTools,
    limits: &Limits,
    deadline: Instant,
) -> Result<Extracted, DocError> {
    let Some(pdftotext) = &tools.pdftotext else {
        return Err(DocError::Unavailable {
            kind: DocKind::Pdf,
            detail: "pdftotext is not on PATH (Debian package poppler-utils)".into(),
        });
    };
    // An absolute path: a relative one starting with '-' would read as an option.
    let path = std::path::absolute(path).map_err(DocError::io)?;
    let mut cmd = match &tools.prlimit {
        Some(prlimit) => {
            let cpu_secs = limits.timeout.as_secs() + 1;
            let mut c = Command::new(prlimit);
            c.arg(format!("--as={}", limits.max_memory_bytes)).arg(format!("--cpu={cpu_secs}")).arg("--");
            c.arg(pdftotext);
            c
        }
        None => {
            // Said once at start (`Reader::new`); here only for debugging.
            tracing::debug!("prlimit not found: pdftotext runs without a memory limit");
            Command::new(pdftotext)
        }
    };
    // Default mode (not -layout) follows reading order across columns; a form feed ends each page.
    cmd.args(["-enc", "UTF-8", "-eol", "unix"])
        .arg(&path)
        .arg("-")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| DocError::Unavailable {
        kind: DocKind::Pdf,
        detail: format!("starting {}: {e}", pdftotext.display()),
    })?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(DocError::Internal { detail: "pdftotext pipes missing".into() });
    };
    // Page markers and trimmed whitespace change the size a little; read enough to fill the cap.
    let raw_cap = limits.max_text_bytes.saturating_mul(2).saturating_add(4096);
    let run = async {
        let (out, err) = tokio::join!(
            async {
                let out = read_capped(&mut stdout, raw_cap).await;
                // Enough text: stop the child rather than let it convert the rest.
                if matches!(out, Ok((_, true))) {
                    let _ = child.start_kill();
                }
                out
            },
            drain_keeping_head(&mut stderr),
        );
        (out, err, child.wait().await)
    };
    let Ok((out, err, status)) = tokio::time::timeout_at(deadline, run).await else {
        let _ = child.kill().await;
        return Err(DocError::Timeout(limits.timeout));
    };
    let (raw, capped) = out.map_err(DocError::io)?;
    let status = status.map_err(DocError::io)?;
    if !capped && !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        tracing::debug!(status = %status, stderr = %stderr, "pdftotext failed");
        return Err(classify_failure(status, &stderr, limits));
    }
    Ok(pages_to_text(&raw, capped, limits.max_text_bytes))
}

fn classify_failure(status: ExitStatus, stderr: &str, limits: &Limits) -> DocError {
    const SIGXCPU: i32 = 24;
    // pdftotext: 1 cannot open the file (a user password is reported as "Incorrect password"),
    // 3 permission to copy text denied.
    if stderr.contains("Incorrect password") || status.code() == Some(3) {
        return DocError::Encrypted(DocKind::Pdf);
    }
    match signal_of(status) {
        Some(SIGXCPU) => DocError::Timeout(limits.timeout),
        // Killed by the memory limit (allocation failure aborts) or a crash in the parser.
        Some(_) => DocError::Corrupt { kind: DocKind::Pdf, reason: "the PDF reader failed on it" },
        None => DocError::Corrupt { kind: DocKind::Pdf, reason: "not a readable PDF file" },
    }
}

/// `pdftotext` output (a form feed after each page) as `[Page N]` sections. An output cut at the
/// cap ends inside a page: that page counts, its partial last character does not.
fn pages_to_text(raw: &[u8], capped: bool, max_text_bytes: usize) -> Extracted {
    let valid = match std::str::from_utf8(raw) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        // Cut inside a character at the cap: drop the partial character only.
        Err(e) if capped && e.error_len().is_none() => String::from_utf8_lossy(&raw[..e.valid_up_to()]),
        Err(_) => String::from_utf8_lossy(raw),
    };
    let mut pages: Vec<&str> = valid.split('\u{c}').collect();
    if !capped && pages.last().is_some_and(|p| p.trim().is_empty()) {
        pages.pop();
    }
    let count = pages.len();
    let mut sink = TextSink::new(max_text_bytes);
    // A scanned PDF has pages but no text: say nothing rather than a column of empty markers.
    if pages.iter().any(|p| !p.trim().is_empty()) {
        for (i, page) in pages.iter().enumerate() {
            sink.heading(&format!("[Page {}]", i + 1));
            sink.push_str(page.trim());
        }
    }
    let (text, truncated) = sink.finish();
    Extracted { text, truncated: truncated || capped, pages: Some(count) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{extract_text, fixtures};
    use super::*;

    /// The tests need poppler-utils; say so plainly rather than failing obscurely.
    fn require_pdftotext() {
        assert!(find_program("pdftotext").is_some(), "pdftotext not found: apt-get install poppler-utils");
    }

    async fn extract_bytes(bytes: &[u8], limits: &Limits) -> Result<Extracted, DocError> {
        require_pdftotext();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.pdf");
        std::fs::write(&p, bytes).unwrap();
        extract_text(&p, DocKind::Pdf, limits).await
    }

    #[tokio::test]
    async fn extracts_pages_in_order_with_markers() {
        let pdf = fixtures::pdf(&["Alpha zebra crossing", "Bravo quokka smiles", "Charlie narwhal dives"]);
        let e = extract_bytes(&pdf, &Limits::default()).await.unwrap();
        assert_eq!(
            e.text,
            "[Page 1]\nAlpha zebra crossing\n\n[Page 2]\nBravo quokka smiles\n\n[Page 3]\nCharlie narwhal dives"
        );
        assert_eq!(e.pages, Some(3));
        assert!(!e.truncated);
    }

    #[tokio::test]
    async fn keeps_non_ascii_text() {
        // Built-in fonts speak WinAnsi: é is \351 in the content stream.
        let pdf = fixtures::pdf(&["Caf\\351 cr\\350me br\\373l\\351e"]);
        let e = extract_bytes(&pdf, &Limits::default()).await.unwrap();
        assert_eq!(e.text, "[Page 1]\nCafé crème brûlée");
    }

    #[tokio::test]
    async fn a_huge_pdf_is_cut_at_the_cap() {
        let pages: Vec<String> = (1..=400).map(|i| format!("Page number {i} of the long report")).collect();
        let refs: Vec<&str> = pages.iter().map(String::as_str).collect();
        let pdf = fixtures::pdf(&refs);
        let limits = Limits { max_text_bytes: 1000, ..Limits::default() };
        let e = extract_bytes(&pdf, &limits).await.unwrap();
        assert!(e.truncated);
        assert!(e.text.len() <= 1000, "{}", e.text.len());
        assert!(e.text.starts_with("[Page 1]\nPage number 1 of the long report\n\n[Page 2]\n"), "{}", e.text);
        assert!(!e.text.contains("number 400 "));
        // Only the pages read so far are counted: the child was stopped at the cap.
        assert!(e.pages.is_some_and(|n| n < 400), "{:?}", e.pages);
    }

    #[tokio::test]
    async fn a_pdf_without_text_gives_empty_text_and_a_page_count() {
        let pdf = fixtures::pdf(&["", ""]);
        let e = extract_bytes(&pdf, &Limits::default()).await.unwrap();
        assert_eq!(e, Extracted { text: String::new(), truncated: false, pages: Some(2) });
    }

    #[tokio::test]
    async fn an_encrypted_pdf_is_refused() {
        // `qpdf --encrypt secret owner 256 -- plain.pdf out.pdf` on a fixture PDF.
        let e = extract_bytes(fixtures::ENCRYPTED_PDF, &Limits::default()).await.unwrap_err();
        assert!(matches!(e, DocError::Encrypted(DocKind::Pdf)), "{e:?}");
        assert_eq!(e.to_string(), "encrypted PDF: cannot extract text without the password");
    }

    #[tokio::test]
    async fn a_pdf_with_only_an_owner_password_is_read() {
        // Encrypted with an empty user password (copy "restricted"): anyone can open it.
        let e = extract_bytes(fixtures::OWNER_ONLY_PDF, &Limits::default()).await.unwrap();
        assert!(e.text.contains("Restricted but readable pelican"), "{}", e.text);
    }

    #[tokio::test]
    async fn a_corrupt_pdf_is_refused() {
        let mut junk = b"%PDF-1.4\n".to_vec();
        junk.extend((0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        let e = extract_bytes(&junk, &Limits::default()).await.unwrap_err();
        assert!(matches!(e, DocError::Corrupt { kind: DocKind::Pdf, .. }), "{e:?}");
        assert_eq!(e.to_string(), "corrupt PDF: not a readable PDF file");

        let truncated = &fixtures::pdf(&["Cut short"])[..200];
        let e = extract_bytes(truncated, &Limits::default()).await.unwrap_err();
        assert!(matches!(e, DocError::Corrupt { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_slow_pdf_times_out_and_its_child_is_killed() {
        // A page whose content stream is megabytes of text operators takes poppler a while.
        let body = "BT /F1 12 Tf 72 720 Td (x) Tj ET\n".repeat(400_000);
        let pdf = fixtures::pdf_with_stream(&body);
        let limits = Limits { timeout: Duration::from_millis(50), ..Limits::default() };
        let started = std::time::Instant::now();
        let e = extract_bytes(&pdf, &limits).await.unwrap_err();
        assert!(matches!(e, DocError::Timeout(_)), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn pages_split_on_form_feeds() {
        let e = pages_to_text("one\n\n\u{c}\n\u{c}three\n\u{c}".as_bytes(), false, 1000);
        assert_eq!(e.text, "[Page 1]\none\n\n[Page 2]\n\n[Page 3]\nthree");
        assert_eq!(e.pages, Some(3));
        // Cut in the middle of "é" at the raw cap: the partial character goes, the page counts.
        let e = pages_to_text(&"a\u{c}bé".as_bytes()[..4], true, 1000);
        assert_eq!((e.text.as_str(), e.truncated, e.pages), ("[Page 1]\na\n\n[Page 2]\nb", true, Some(2)));
    }
}
