//! The sentence segmenter (voice/segmenter.rs) never loses text, never emits a blank sentence,
//! and gives the same sentences however the model's output is cut into deltas.
#![no_main]

use astrgate::voice::segmenter::Segmenter;
use libfuzzer_sys::fuzz_target;

#[path = "cuts.rs"]
mod cuts;

fn run(deltas: &[&str], min: usize) -> Vec<String> {
    let mut s = Segmenter::new(min);
    let mut out: Vec<String> = deltas.iter().flat_map(|d| s.push(d)).collect();
    out.extend(s.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    let min = 1 + data.last().copied().unwrap_or(0) as usize % 24;
    let (text, cuts) = cuts::text_and_cuts(data);
    let whole = run(&[text.as_str()], min);
    let kept: String = whole.concat().chars().filter(|c| !c.is_whitespace()).collect();
    let given: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert_eq!(kept, given, "text lost");
    assert!(whole.iter().all(|s| !s.trim().is_empty()), "a blank sentence");
    assert_eq!(run(&cuts::deltas(&text, &cuts), min), whole, "deltas changed the sentences");
});
