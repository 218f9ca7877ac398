//! The IM `umo` parser (http/im.rs): any string gives a target whose parts rebuild it, or an
//! error text, never a panic.
#![no_main]

use astrgate::http::im::parse_umo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match parse_umo(s) {
        Ok(t) => {
            assert_eq!(format!("{}:{}:{}", t.platform_id, t.message_type, t.session), s);
            assert!(!t.platform_id.is_empty() && !t.session.trim().is_empty());
        }
        Err(e) => assert!(e.starts_with("Invalid umo")),
    }
});
