//! Prints what the server would show a model for a document: its detected kind and extracted
//! text, under the default limits (or `--max-text BYTES`).
//!
//! ```bash
//! cargo run --example doc_text -- report.pdf slides.pptx page.html
//! cargo run --example doc_text -- --max-text 2000 big.docx
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use astrgate::documents::{Limits, detect_file, extract_text};

#[tokio::main]
async fn main() {
    let mut limits = Limits::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--max-text" {
            limits.max_text_bytes = args.next().and_then(|n| n.parse().ok()).expect("--max-text BYTES");
            continue;
        }
        let path = Path::new(&arg);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let mime = mime_guess::from_path(path).first_raw().unwrap_or("");
        let Some(kind) = detect_file(path, mime, name).await.expect("reading the file") else {
            println!("{arg}: not a document (named only)");
            continue;
        };
        let started = std::time::Instant::now();
        match extract_text(path, kind, &limits).await {
            Ok(e) => {
                println!("{}", e.render(name, kind));
                eprintln!("{arg}: {kind}, {} bytes of text in {:?}", e.text.len(), started.elapsed());
            }
            Err(e) => println!("{arg}: {e} ({:?}; {e:?})", e.disposition()),
        }
    }
}
