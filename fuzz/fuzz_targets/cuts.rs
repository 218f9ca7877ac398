/// Splits fuzzer input into a text and the places it is cut into deltas: the first byte says how
/// many cut positions follow (two bytes each), the rest is the text (lossy UTF-8).
pub fn text_and_cuts(data: &[u8]) -> (String, Vec<usize>) {
    let n = data.first().copied().unwrap_or(0) as usize % 16;
    let head = (1 + 2 * n).min(data.len());
    let text = String::from_utf8_lossy(&data[head..]).into_owned();
    let mut cuts: Vec<usize> = data[1.min(data.len())..head]
        .chunks(2)
        .map(|c| usize::from(c[0]) | usize::from(*c.get(1).unwrap_or(&0)) << 8)
        .map(|c| c % (text.len() + 1))
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    (text, cuts)
}

/// The text cut at those places.
pub fn deltas<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for &i in cuts {
        out.push(&text[last..i]);
        last = i;
    }
    out.push(&text[last..]);
    out
}
