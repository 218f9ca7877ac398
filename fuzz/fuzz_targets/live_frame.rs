//! Live socket frames (voice/live.rs): any text a client sends is parsed into a typed frame or
//! refused with a message, never a panic.
#![no_main]

use astrgate::voice::live::LiveIn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(serde_json::Value::Object(frame)) = serde_json::from_slice(data) {
        if let Err(e) = LiveIn::parse(frame) {
            assert!(!e.is_empty());
        }
    }
});
