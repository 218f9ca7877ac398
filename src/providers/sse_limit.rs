//! A bound on one server-sent event from a provider. The SSE parser keeps an unfinished line,
//! and the data lines of an unfinished event, in memory until the blank line that ends the
//! event; a provider that streams one endless line (or endless data lines with no blank line)
//! would grow that buffer for as long as it keeps sending, since each byte also keeps the idle
//! timeout from firing. This adapter sits between the HTTP body and the parser and fails the
//! stream once an event grows past the cap.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// The largest event accepted from a provider: far above any chunk a provider sends (one token,
/// or a tool call's arguments), and small enough to hold for every run at once.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Why the provider's byte stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Transport(reqwest::Error),
    #[error("an event longer than {0} bytes")]
    TooLong(usize),
}

/// Where the scan is: bytes since the last event boundary, in the current line, and whether
/// the last byte was a CR (whose LF then belongs to the same line ending).
#[derive(Default)]
struct Scan {
    in_event: usize,
    in_line: usize,
    after_cr: bool,
}

impl Scan {
    /// Feeds `chunk`; false once the current event is over `max` bytes.
    fn feed(&mut self, chunk: &[u8], max: usize) -> bool {
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    if self.in_line == 0 {
                        // A blank line ends the event.
                        self.in_event = 0;
                    }
                    self.in_line = 0;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.in_line += 1;
                    self.in_event += 1;
                    self.after_cr = false;
                }
            }
        }
        self.in_event <= max
    }
}

/// `body` as it is, failing with [`ReadError::TooLong`] once an event grows past `max` bytes.
pub fn capped(
    body: impl Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
    max: usize,
) -> impl Stream<Item = Result<Bytes, ReadError>> + Send + 'static {
    let mut scan = Scan::default();
    body.map(move |item| {
        let chunk = item.map_err(ReadError::Transport)?;
        if scan.feed(&chunk, max) { Ok(chunk) } else { Err(ReadError::TooLong(max)) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fits(chunks: &[&[u8]], max: usize) -> bool {
        let mut s = Scan::default();
        chunks.iter().all(|c| s.feed(c, max))
    }

    #[test]
    fn events_are_measured_between_blank_lines_in_every_line_ending() {
        for sep in ["\n\n", "\r\n\r\n", "\r\r"] {
            let ev = format!("data: {}{sep}", "x".repeat(10));
            // Many small events are fine, whatever their total.
            let many = ev.repeat(100);
            assert!(fits(&[many.as_bytes()], 32), "{sep:?}");
            // Split anywhere, too.
            let (a, b) = many.as_bytes().split_at(37);
            assert!(fits(&[a, b], 32), "{sep:?}");
        }
        // One line over the cap, in pieces.
        assert!(!fits(&[b"data: ", &[b'a'; 20], &[b'a'; 20]], 32));
        // Data lines that never end their event.
        let lines = "data: abc\n".repeat(10);
        assert!(!fits(&[lines.as_bytes()], 32));
        assert!(!fits(&["data: abc\r\n".repeat(10).as_bytes()], 32));
        // Keep-alive comments between events are fine.
        assert!(fits(&[b": ping\n\n".repeat(50).as_slice()], 32));
    }
}
