//! Small real documents built in memory for the tests: minimal but valid PDF, OOXML and ODF files.

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// "Secret platypus plans", encrypted with user password `secret` (AES-256), made by
/// `qpdf --encrypt secret owner 256 -- plain.pdf out.pdf` from a [`pdf`] fixture.
pub const ENCRYPTED_PDF: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/documents/encrypted-user-password.pdf"));
/// "Restricted but readable pelican", with an empty user password and copying "forbidden":
/// `qpdf --encrypt "" owner 256 --extract=n -- plain.pdf out.pdf`.
pub const OWNER_ONLY_PDF: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/documents/encrypted-owner-only.pdf"));

/// A PDF with one page per string, each shown in Helvetica. The strings go into PDF string
/// literals as they are (escape `(`, `)`, `\` and non-ASCII as octal yourself); an empty string
/// makes a page without text.
pub fn pdf(pages: &[&str]) -> Vec<u8> {
    let streams: Vec<String> = pages
        .iter()
        .map(|t| if t.is_empty() { String::new() } else { format!("BT /F1 12 Tf 72 720 Td ({t}) Tj ET") })
        .collect();
    pdf_from_streams(&streams)
}

/// A one-page PDF whose content stream is `body`.
pub fn pdf_with_stream(body: &str) -> Vec<u8> {
    pdf_from_streams(&[body.to_string()])
}

fn pdf_from_streams(streams: &[String]) -> Vec<u8> {
    let n = streams.len();
    let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")).into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
    ];
    for (i, s) in streams.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                5 + 2 * i
            )
            .into_bytes(),
        );
        objects.push(format!("<< /Length {} >>\nstream\n{s}\nendstream", s.len()).into_bytes());
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend(o);
        out.extend(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    out
}

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// A zip of `entries`, deflated.
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, deflated()).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// An ODF package: the `mimetype` entry first and stored, as the format requires, then `entries`.
pub fn zip_odf(mimetype: &str, entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("mimetype", SimpleFileOptions::default().compression_method(CompressionMethod::Stored)).unwrap();
    w.write_all(mimetype.as_bytes()).unwrap();
    for (name, data) in entries {
        w.start_file(*name, deflated()).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>"#;
const PACKAGE_RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>"#;

/// A docx whose body is one paragraph per string.
pub fn docx(paragraphs: &[&str]) -> Vec<u8> {
    let body: String = paragraphs.iter().map(|p| format!("<w:p><w:r><w:t>{}</w:t></w:r></w:p>", esc(p))).collect();
    docx_with_body(&body)
}

/// A docx with `body` (WordprocessingML) inside `<w:body>`.
pub fn docx_with_body(body: &str) -> Vec<u8> {
    let doc = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><w:body>{body}<w:sectPr><w:pgSz w:w="12240" w:h="15840"/></w:sectPr></w:body></w:document>"#
    );
    zip(&[
        ("[Content_Types].xml", CONTENT_TYPES.as_bytes()),
        ("_rels/.rels", PACKAGE_RELS.as_bytes()),
        ("word/document.xml", doc.as_bytes()),
    ])
}

/// A zip bomb dressed as a docx: `word/document.xml` is `size` bytes, almost all spaces (text no
/// extractor keeps), so it compresses about a thousandfold.
pub fn docx_bomb(size: usize) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("[Content_Types].xml", deflated()).unwrap();
    w.write_all(CONTENT_TYPES.as_bytes()).unwrap();
    w.start_file("word/document.xml", deflated().large_file(size > u32::MAX as usize)).unwrap();
    w.write_all(b"<w:document><w:body>").unwrap();
    let chunk = vec![b' '; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        w.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    w.write_all(b"</w:body></w:document>").unwrap();
    w.finish().unwrap().into_inner()
}

/// `zip` with every entry's uncompressed size, in local headers and the central directory,
/// rewritten to 1000 bytes: the lie a hostile archive tells to get past size checks.
pub fn with_lying_sizes(zip: &[u8]) -> Vec<u8> {
    let mut out = zip.to_vec();
    let lie = 1000u32.to_le_bytes();
    let mut i = 0;
    while i + 4 <= out.len() {
        match &out[i..i + 4] {
            b"PK\x03\x04" if i + 26 <= out.len() => out[i + 22..i + 26].copy_from_slice(&lie),
            b"PK\x01\x02" if i + 28 <= out.len() => out[i + 24..i + 28].copy_from_slice(&lie),
            _ => {}
        }
        i += 1;
    }
    out
}

/// Column letters for a 0-based index.
fn col_name(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

/// An xlsx with the given sheets of rows. Numbers become numeric cells; other text becomes shared
/// strings on the first sheet and inline strings on the others; empty strings leave the cell out.
pub fn xlsx(sheets: &[(&str, &[&[&str]])]) -> Vec<u8> {
    let mut shared: Vec<String> = Vec::new();
    let mut parts: Vec<(String, String)> = Vec::new();
    for (si, (_, rows)) in sheets.iter().enumerate() {
        let mut xml = String::from(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
        );
        for (ri, row) in rows.iter().enumerate() {
            xml += &format!(r#"<row r="{}">"#, ri + 1);
            for (ci, cell) in row.iter().enumerate() {
                let r = format!("{}{}", col_name(ci), ri + 1);
                if cell.is_empty() {
                    continue;
                } else if cell.parse::<f64>().is_ok() {
                    xml += &format!(r#"<c r="{r}"><v>{cell}</v></c>"#);
                } else if si == 0 {
                    shared.push(cell.to_string());
                    xml += &format!(r#"<c r="{r}" t="s"><v>{}</v></c>"#, shared.len() - 1);
                } else {
                    xml += &format!(r#"<c r="{r}" t="inlineStr"><is><t>{}</t></is></c>"#, esc(cell));
                }
            }
            xml += "</row>";
        }
        xml += "</sheetData></worksheet>";
        parts.push((format!("xl/worksheets/sheet{}.xml", si + 1), xml));
    }
    let sheet_list: String = sheets
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!(r#"<sheet name="{}" sheetId="{}" r:id="rId{}"/>"#, esc(name), i + 1, i + 1))
        .collect();
    let workbook = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>{sheet_list}</sheets></workbook>"#
    );
    let rels: String = (0..sheets.len())
        .map(|i| format!(r#"<Relationship Id="rId{}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{}.xml"/>"#, i + 1, i + 1))
        .collect();
    let rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}</Relationships>"#
    );
    let sst: String = shared.iter().map(|s| format!("<si><t>{}</t><rPh><t>phonetic</t></rPh></si>", esc(s))).collect();
    let sst = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{0}" uniqueCount="{0}">{sst}</sst>"#,
        shared.len()
    );
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("[Content_Types].xml", CONTENT_TYPES.as_bytes()),
        ("_rels/.rels", PACKAGE_RELS.as_bytes()),
        ("xl/workbook.xml", workbook.as_bytes()),
        ("xl/_rels/workbook.xml.rels", rels.as_bytes()),
        ("xl/sharedStrings.xml", sst.as_bytes()),
    ];
    // Sheet files stored in reverse, so file order and workbook order differ.
    for (name, xml) in parts.iter().rev() {
        entries.push((name, xml.as_bytes()));
    }
    zip(&entries)
}

/// A pptx with one text box per slide.
pub fn pptx(slides: &[&str]) -> Vec<u8> {
    let ids: String =
        (0..slides.len()).map(|i| format!(r#"<p:sldId id="{}" r:id="rId{}"/>"#, 256 + i, i + 1)).collect();
    let presentation = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:presentation xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"><p:sldIdLst>{ids}</p:sldIdLst></p:presentation>"#
    );
    let rels: String = (0..slides.len())
        .map(|i| format!(r#"<Relationship Id="rId{}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/slide" Target="slides/slide{}.xml"/>"#, i + 1, i + 1))
        .collect();
    let rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}</Relationships>"#
    );
    let slide_xml: Vec<(String, String)> = slides
        .iter()
        .enumerate()
        .map(|(i, text)| {
            (
                format!("ppt/slides/slide{}.xml", i + 1),
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:sld xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"><p:cSld><p:spTree><p:sp><p:nvSpPr><p:cNvPr id="2" name="Title 1"/></p:nvSpPr><p:txBody><a:bodyPr/><a:p><a:r><a:rPr lang="en-US"/><a:t>{}</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#,
                    esc(text)
                ),
            )
        })
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("[Content_Types].xml", CONTENT_TYPES.as_bytes()),
        ("_rels/.rels", PACKAGE_RELS.as_bytes()),
        ("ppt/presentation.xml", presentation.as_bytes()),
        ("ppt/_rels/presentation.xml.rels", rels.as_bytes()),
    ];
    for (name, xml) in &slide_xml {
        entries.push((name, xml.as_bytes()));
    }
    zip(&entries)
}

const ODF_NS: &str = r#"xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0""#;

fn odf(mimetype: &str, body: &str) -> Vec<u8> {
    let content = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODF_NS} office:version="1.3"><office:automatic-styles><style:style xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" style:name="P1"><text:p>not body text</text:p></style:style></office:automatic-styles><office:body>{body}</office:body></office:document-content>"#
    );
    zip_odf(mimetype, &[("content.xml", content.as_bytes())])
}

/// An odt with one paragraph per string.
pub fn odt(paragraphs: &[&str]) -> Vec<u8> {
    let body: String = paragraphs.iter().map(|p| format!("<text:p>{}</text:p>", esc(p))).collect();
    odt_with_body(&body)
}

/// An odt with `body` inside `<office:text>`.
pub fn odt_with_body(body: &str) -> Vec<u8> {
    odf("application/vnd.oasis.opendocument.text", &format!("<office:text>{body}</office:text>"))
}

/// An ods with the given sheets of rows; a trailing run of repeated empty cells and rows, as
/// LibreOffice writes them, must not be expanded.
pub fn ods(sheets: &[(&str, &[&[&str]])]) -> Vec<u8> {
    let mut body = String::from("<office:spreadsheet>");
    for (name, rows) in sheets {
        body += &format!(r#"<table:table table:name="{}">"#, esc(name));
        for row in rows.iter() {
            body += "<table:table-row>";
            for cell in row.iter() {
                body += &format!(
                    r#"<table:table-cell office:value-type="string"><text:p>{}</text:p></table:table-cell>"#,
                    esc(cell)
                );
            }
            body += r#"<table:table-cell table:number-columns-repeated="16380"/></table:table-row>"#;
        }
        body += r#"<table:table-row table:number-rows-repeated="1048570"><table:table-cell table:number-columns-repeated="16384"/></table:table-row></table:table>"#;
    }
    body += "</office:spreadsheet>";
    odf("application/vnd.oasis.opendocument.spreadsheet", &body)
}

/// An odp with one text frame per slide, and speaker notes that are not extracted.
pub fn odp(slides: &[&str]) -> Vec<u8> {
    let mut body = String::from("<office:presentation>");
    for (i, text) in slides.iter().enumerate() {
        body += &format!(
            r#"<draw:page draw:name="page{}"><draw:frame><draw:text-box><text:p>{}</text:p></draw:text-box></draw:frame><presentation:notes><draw:frame><draw:text-box><text:p>speaker notes</text:p></draw:text-box></draw:frame></presentation:notes></draw:page>"#,
            i + 1,
            esc(text)
        );
    }
    body += "</office:presentation>";
    odf("application/vnd.oasis.opendocument.presentation", &body)
}

/// An odt whose manifest says its content is encrypted (the content itself is random bytes).
pub fn odt_encrypted() -> Vec<u8> {
    let manifest = r#"<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"><manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="x"><manifest:algorithm manifest:algorithm-name="Blowfish CFB"/></manifest:encryption-data></manifest:file-entry></manifest:manifest>"#;
    let junk: Vec<u8> = (0..512u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    zip_odf(
        "application/vnd.oasis.opendocument.text",
        &[("META-INF/manifest.xml", manifest.as_bytes()), ("content.xml", &junk)],
    )
}
