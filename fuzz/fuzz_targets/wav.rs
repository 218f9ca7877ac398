//! The WAV header reader (audio/wav.rs): any bytes give a WAV or an error; a WAV converts to
//! 16 kHz mono without a panic and with a length that matches its duration.
#![no_main]

use astrgate::audio::wav;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(w) = wav::parse(data) else { return };
    let secs = w.duration_secs();
    assert!(secs.is_finite() && secs >= 0.0);
    if secs > 5.0 {
        return; // resampling long input only slows the fuzzer down
    }
    let mono = wav::to_mono(&w, 16_000);
    let expect = (secs * 16_000.0).round() as i64;
    assert!((mono.len() as i64 - expect).abs() <= 2, "{} samples for {secs} s", mono.len());
});
