//! Documents reach the model (issue 21): PDFs and office documents uploaded over HTTP, sent in a
//! chat as `file` parts, arrive at the (fake) upstream as their text — or, for a provider with
//! `pdf_input = "file"`, a PDF arrives as an OpenAI `file` part. Hostile documents (encrypted,
//! corrupt, zip bombs, huge) get their answer before anything is stored.
//!
//! The documents are built by the same small writers the unit tests use
//! (`src/documents/fixtures.rs`): a hand-written PDF with a real xref table and Helvetica text,
//! docx/xlsx/pptx/ODF zips written with `zip`; no office suite or Python needed in CI.

use base64::Engine;
use serde_json::{Value, json};

use crate::fake_llm::FakeLlm;
use crate::files::upload;
use crate::helpers::*;

#[allow(dead_code)]
#[path = "../../src/documents/fixtures.rs"]
mod fixtures;

const PDF: &str = "application/pdf";
const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

async fn setup(extra: &str) -> (TestApp, FakeLlm, String) {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n{extra}\n", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat", "file"]).await;
    (app, fake, key)
}

/// Uploads and returns the attachment id.
async fn upload_id(app: &TestApp, key: &str, name: &str, mime: &str, bytes: Vec<u8>) -> String {
    let (s, b) = upload(app, key, name, mime, bytes).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["attachment_id"].as_str().unwrap().to_string()
}

/// `text` with the attachment as a `file` part.
fn ask(text: &str, id: &str) -> Value {
    json!({"username": "u", "message": [{"type": "plain", "text": text}, {"type": "file", "attachment_id": id}]})
}

fn summarise(id: &str) -> Value {
    ask("summarise this PDF", id)
}

/// The content of the last user message of the `i`th request the upstream received.
fn user_content(fake: &FakeLlm, i: usize) -> Value {
    let req = &fake.requests()[i];
    let msgs = req["messages"].as_array().unwrap();
    msgs.iter().rev().find(|m| m["role"] == "user").unwrap()["content"].clone()
}

/// Chats and expects a refusal (status, message), with nothing stored and no model call.
async fn expect_refusal(app: &TestApp, fake: &FakeLlm, key: &str, body: Value, status: u16, message: &str) {
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(key).json(&body)).await;
    assert_error(s, &b, status, message);
    assert!(fake.requests().is_empty(), "nothing reached the model");
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=u")).bearer_auth(key)).await;
    assert_eq!(b["data"]["total"], 0, "no session was created: {b}");
}

#[tokio::test]
async fn a_pdf_reaches_the_model_as_the_text_of_its_pages() {
    let (app, fake, key) = setup("").await;
    let pdf = fixtures::pdf(&["Quarterly report, first page", "The quokka ledger balances at 7731 acorns"]);
    let id = upload_id(&app, &key, "report.pdf", PDF, pdf).await;
    let frames = chat(&app, &key, summarise(&id)).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end", "{frames:?}");
    // Only text: the message goes as one string, the document between its markers.
    let content = user_content(&fake, 0);
    let text = content.as_str().unwrap();
    assert!(text.starts_with("summarise this PDF\n[Document report.pdf (PDF, 2 pages)]\n"), "{text}");
    assert!(
        text.contains("[Page 1]\nQuarterly report, first page\n\n[Page 2]\nThe quokka ledger balances at 7731 acorns")
    );
    assert!(text.ends_with("[End of document report.pdf]"), "{text}");
    // The stored message keeps the part, not the extracted text.
    let sid = frames[0].data["session_id"].as_str().unwrap();
    let (_, h) =
        send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{sid}/messages?username=u"))).bearer_auth(&key))
            .await;
    let stored = &h["data"]["messages"][0]["content"]["message"];
    assert_eq!(stored[1], json!({"type": "file", "attachment_id": id, "filename": "report.pdf", "mime_type": PDF}));
    assert!(!h["data"]["messages"][0].to_string().contains("quokka"), "{h}");
}

#[tokio::test]
async fn a_docx_reaches_the_model_as_its_text() {
    let (app, fake, key) = setup("").await;
    let docx = fixtures::docx(&["Minutes of the meeting", "The wombat committee approved budget line 4412"]);
    let id = upload_id(&app, &key, "minutes.docx", DOCX, docx).await;
    let frames = chat(&app, &key, ask("summarise this document", &id)).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    let content = user_content(&fake, 0);
    let text = content.as_str().unwrap();
    assert!(
        text.contains("[Document minutes.docx (docx)]\nMinutes of the meeting\nThe wombat committee approved budget line 4412\n[End of document minutes.docx]"),
        "{text}"
    );
}

#[tokio::test]
async fn every_document_kind_reaches_the_model_through_the_chat_socket() {
    let (app, fake, key) = setup("").await;
    let docs: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("sheet.xlsx", "application/octet-stream", fixtures::xlsx(&[("Q3", &[&["region", "kiwi"], &["north", "41"]])]), "[Sheet Q3]\nregion\tkiwi\nnorth\t41"),
        ("deck.pptx", "application/octet-stream", fixtures::pptx(&["Opening slide", "Numbat roadmap"]), "[Slide 2]\nNumbat roadmap"),
        ("letter.odt", "application/octet-stream", fixtures::odt(&["Dear bilby society"]), "Dear bilby society"),
        ("table.ods", "application/octet-stream", fixtures::ods(&[("Tab", &[&["dingo", "7"]])]), "[Sheet Tab]\ndingo\t7"),
        ("talk.odp", "application/octet-stream", fixtures::odp(&["Echidna facts"]), "[Slide 1]\nEchidna facts"),
        ("page.html", "text/html", b"<html><head><title>Koala</title><script>evil()</script></head><body><h1>Koala care</h1><p>Feed eucalyptus &amp; water.</p></body></html>".to_vec(), "# Koala care\n\nFeed eucalyptus & water."),
    ];
    let mut parts = vec![json!({"type": "plain", "text": "compare these"})];
    for (name, mime, bytes, _) in &docs {
        let id = upload_id(&app, &key, name, mime, bytes.clone()).await;
        parts.push(json!({"type": "file", "attachment_id": id}));
    }
    let bearer = format!("Bearer {key}");
    let mut ws = ws_connect(&app, "/api/v1/chat/ws", &[("authorization", bearer.as_str())]).await;
    ws.send(json!({"username": "u", "message": parts, "message_id": "m-1"})).await;
    let frames = ws.until(|f| f["type"] == "end" || f["type"] == "error").await;
    assert_eq!(frames.last().unwrap()["type"], "end", "{frames:?}");
    let content = user_content(&fake, 0);
    let text = content.as_str().unwrap();
    for (name, _, _, want) in &docs {
        assert!(text.contains(&format!("[Document {name} (")), "{name} is framed: {text}");
        assert!(text.contains(want), "{name}: {want:?} not in {text}");
    }
    assert!(!text.contains("evil()"), "scripts are not text: {text}");
}

#[tokio::test]
async fn an_encrypted_pdf_is_refused_and_nothing_is_stored() {
    let (app, fake, key) = setup("").await;
    let id = upload_id(&app, &key, "secret.pdf", PDF, fixtures::ENCRYPTED_PDF.to_vec()).await;
    let message = "secret.pdf: encrypted PDF: cannot extract text without the password";
    expect_refusal(&app, &fake, &key, summarise(&id), 400, message).await;
    // The chat socket says the same.
    let bearer = format!("Bearer {key}");
    let mut ws = ws_connect(&app, "/api/v1/chat/ws", &[("authorization", bearer.as_str())]).await;
    let mut body = summarise(&id);
    body["message_id"] = json!("m-1");
    ws.send(body).await;
    let frame = ws.recv().await;
    assert_eq!(frame, json!({"type": "error", "code": "INVALID_MESSAGE", "data": message, "message_id": "m-1"}));
    assert!(fake.requests().is_empty());
    // A PDF that only restricts copying (no user password) is read, as any viewer would.
    let id = upload_id(&app, &key, "restricted.pdf", PDF, fixtures::OWNER_ONLY_PDF.to_vec()).await;
    let frames = chat(&app, &key, summarise(&id)).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    assert!(user_content(&fake, 0).as_str().unwrap().contains("Restricted but readable pelican"));
}

#[tokio::test]
async fn a_zip_bomb_disguised_as_a_docx_is_refused() {
    let (app, fake, key) = setup("").await;
    // 200 MiB of XML in a 200 KiB file: refused from its declared sizes, before inflating.
    let bomb = fixtures::docx_bomb(200 * 1024 * 1024);
    assert!(bomb.len() < 1024 * 1024);
    let id = upload_id(&app, &key, "report.docx", DOCX, bomb.clone()).await;
    let message = "report.docx: document too large: more than 64.0 MiB of uncompressed content";
    expect_refusal(&app, &fake, &key, summarise(&id), 400, message).await;
    // The same bomb whose headers claim 1000 bytes per entry: the zip reader stops at the declared
    // size, so the XML ends early (and were it inflated further, the shared budget would stop it).
    let liar = fixtures::with_lying_sizes(&bomb);
    let id = upload_id(&app, &key, "liar.docx", DOCX, liar).await;
    let started = std::time::Instant::now();
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&summarise(&id))).await;
    assert_error(s, &b, 400, "liar.docx: corrupt docx: malformed XML inside");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn corrupt_documents_are_refused() {
    let (app, fake, key) = setup("").await;
    let truncated = fixtures::pdf(&["Cut short"])[..200].to_vec();
    let id = upload_id(&app, &key, "cut.pdf", PDF, truncated).await;
    expect_refusal(&app, &fake, &key, summarise(&id), 400, "cut.pdf: corrupt PDF: not a readable PDF file").await;
    let id = upload_id(&app, &key, "notes.docx", DOCX, b"this was never a word document".to_vec()).await;
    expect_refusal(&app, &fake, &key, summarise(&id), 400, "notes.docx: corrupt docx: not a zip archive").await;
}

#[tokio::test]
async fn a_long_document_is_cut_and_the_model_is_told_where() {
    let cap = "[files]\ndocument_text_max_bytes = 2048\ndocument_max_bytes = 100000\n";
    let (app, fake, key) = setup(cap).await;
    let pages: Vec<String> = (1..=100).map(|i| format!("Chapter {i} of the long platypus saga")).collect();
    let refs: Vec<&str> = pages.iter().map(String::as_str).collect();
    let id = upload_id(&app, &key, "saga.pdf", PDF, fixtures::pdf(&refs)).await;
    let frames = chat(&app, &key, summarise(&id)).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    let content = user_content(&fake, 0);
    let text = content.as_str().unwrap();
    assert!(text.contains("[Page 1]\nChapter 1 of the long platypus saga"), "{text}");
    assert!(!text.contains("Chapter 100 "), "the text is cut at the cap");
    assert!(
        text.ends_with("\n[Text cut here: the document is longer than shown]\n[End of document saga.pdf]"),
        "{text}"
    );
    assert!(text.len() < 2048 + 200, "{}", text.len());
    // A file over document_max_bytes is not read at all.
    let pages: Vec<String> = (1..=400).map(|i| format!("Chapter {i} of the longer saga")).collect();
    let refs: Vec<&str> = pages.iter().map(String::as_str).collect();
    let big = fixtures::pdf(&refs);
    let kib = big.len() as f64 / 1024.0;
    assert!(big.len() > 100_000, "{}", big.len());
    let id = upload_id(&app, &key, "tome.pdf", PDF, big).await;
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&summarise(&id))).await;
    let want = format!("tome.pdf: document too large: the file is {kib:.1} KiB (at most 97.7 KiB can be read)");
    assert_error(s, &b, 400, &want);
    assert_eq!(fake.requests().len(), 1, "only the first document reached the model");
}

#[tokio::test]
async fn a_provider_with_pdf_input_file_gets_the_pdf_itself() {
    let fake = FakeLlm::start().await;
    let toml = format!(
        "{}\ndefault = true\n{}\npdf_input = \"file\"\n",
        fake.provider_toml("plain"),
        fake.provider_toml("reader")
    );
    let app = spawn_toml(&toml).await;
    let key = app.key(&["chat", "file"]).await;
    let pdf = fixtures::pdf(&["The emu census counted 5120 birds"]);
    let id = upload_id(&app, &key, "census.pdf", PDF, pdf.clone()).await;
    let docx = upload_id(&app, &key, "notes.docx", DOCX, fixtures::docx(&["Cassowary notes"])).await;
    let mut body = summarise(&id);
    body["message"].as_array_mut().unwrap().push(json!({"type": "file", "attachment_id": docx}));
    // The default provider takes text.
    let frames = chat(&app, &key, body.clone()).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    assert!(user_content(&fake, 0).as_str().unwrap().contains("The emu census counted 5120 birds"));
    // The provider chosen for the turn takes files: the PDF goes as it was uploaded.
    body["selected_provider"] = json!("reader");
    let frames = chat(&app, &key, body).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    let content = user_content(&fake, 1);
    let parts = content.as_array().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pdf);
    assert_eq!(parts[0], json!({"type": "text", "text": "summarise this PDF"}));
    assert_eq!(
        parts[1],
        json!({"type": "file", "file": {"filename": "census.pdf", "file_data": format!("data:application/pdf;base64,{b64}")}})
    );
    // Other documents still go as text.
    assert!(parts[2]["text"].as_str().unwrap().contains("[Document notes.docx (docx)]\nCassowary notes"));
}
