//! Upload file names (attachments.rs): whatever a multipart body names, the sanitised name is a
//! plain, short file name that cannot leave the attachments folder, and typing never panics.
#![no_main]

use astrgate::attachments::{classify, sanitize_filename};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize % (data.len() + 1);
    let (head, name) = data.split_at(split);
    let name = String::from_utf8_lossy(name);
    let clean = sanitize_filename(&name);
    assert!(!clean.is_empty(), "empty name for {name:?}");
    assert!(!clean.starts_with('.'), "{clean:?}");
    assert!(!clean.contains(['/', '\\', '\0']), "{clean:?}");
    assert!(!clean.chars().any(char::is_control), "{clean:?}");
    assert!(clean.chars().count() <= 100, "{clean:?}");
    let (mime, kind) = classify(head, None, &clean);
    assert!(!mime.is_empty() && ["image", "record", "video", "file"].contains(&kind));
});
