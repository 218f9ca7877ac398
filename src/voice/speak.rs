//! The speech worker of a run: LLM deltas → [`Segmenter`] → TTS, one audio file per sentence.
//! It knows nothing of runs: each spoken sentence and the final timings go to a [`SpeechSink`].
//!
//! One task: it keeps reading deltas (so the model stream is never held up by speech) while the
//! synthesis of the current sentence is in flight, queues the sentences that complete meanwhile
//! (bounded: beyond `SENTENCE_QUEUE` it stops reading deltas, so the model waits instead of
//! memory growing), and appends an `Audio` event to the run as each synthesis finishes — in
//! sentence order. So sentence 1 is spoken while sentence 2 is still being generated. The run's
//! token stops it at once; dropping an in-flight synthesis aborts its request or process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::segmenter::Segmenter;
use crate::providers::tts::{Tts, TtsError};

/// Sentence-level TTS for a run.
#[derive(Clone)]
pub struct Speech {
    pub tts: Arc<dyn Tts>,
    pub min_sentence_chars: usize,
    /// How far the listener has got: speech is synthesised only a little ahead of it.
    pub playback: Arc<Playback>,
}

/// Where the worker's results go (the run that asked for speech).
pub trait SpeechSink: Send + Sync + 'static {
    /// One sentence, spoken, in sentence order.
    fn sentence(&self, text: String, audio: bytes::Bytes, mime: &str);
    /// Every sentence was spoken: the time to the first audio and in all, and the TTS's name.
    fn finished(&self, first_frame_secs: f64, total_secs: f64, tts: &str);
    /// A label for log lines (the run id).
    fn label(&self) -> &str;
}

/// Sentences waiting for TTS; beyond this the worker stops reading deltas.
const SENTENCE_QUEUE: usize = 16;

type Synthesis = std::pin::Pin<Box<dyn std::future::Future<Output = (String, Result<bytes::Bytes, TtsError>)> + Send>>;

/// Sentences synthesised but not yet handed to the listener's socket, at most. Enough that the
/// next sentence is ready when the current one has been sent; few enough that a slow listener
/// (or one about to interrupt) costs neither memory nor TTS work for the rest of the reply.
pub const AHEAD: usize = 2;

/// The listener's progress through the spoken sentences (see [`AHEAD`]).
#[derive(Debug, Default)]
pub struct Playback {
    sent: AtomicUsize,
    wake: Notify,
}

impl Playback {
    /// One sentence's audio was handed to the socket writer.
    pub fn played_one(&self) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Starts the worker; the returned handle completes when every sentence was spoken (or on cancel).
pub fn spawn_worker(
    speech: Speech,
    mut deltas: mpsc::Receiver<String>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    sink: Arc<dyn SpeechSink>,
) -> JoinHandle<()> {
    tasks.spawn(async move {
        let mut seg = Segmenter::new(speech.min_sentence_chars);
        let mut queue: VecDeque<String> = VecDeque::new();
        let mut current: Option<Synthesis> = None;
        let mut deltas_done = false;
        let started = Instant::now();
        let mut first: Option<f64> = None;
        let mut spoken = 0usize;
        let synth = |text: String| -> Synthesis {
            let tts = speech.tts.clone();
            Box::pin(async move {
                let r = tts.synthesize(&text).await;
                (text, r)
            })
        };
        let playback = speech.playback.clone();
        loop {
            // `spoken` counts sentences pushed to the run; the listener has sent `sent` of them.
            let ahead = spoken.saturating_sub(playback.sent());
            if current.is_none()
                && ahead < AHEAD
                && let Some(next) = queue.pop_front()
            {
                current = Some(synth(next));
            }
            if deltas_done && current.is_none() && queue.is_empty() {
                break;
            }
            let waiting = current.is_none() && !queue.is_empty();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = playback.wake.notified(), if waiting => {}
                d = deltas.recv(), if !deltas_done && queue.len() < SENTENCE_QUEUE => {
                    match d {
                        Some(d) => queue.extend(seg.push(&d)),
                        None => {
                            deltas_done = true;
                            queue.extend(seg.finish());
                        }
                    }
                }
                (text, audio) = in_flight(&mut current), if current.is_some() => {
                    current = None;
                    match audio {
                        Ok(audio) => {
                            first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                            spoken += 1;
                            sink.sentence(text, audio, speech.tts.mime());
                        }
                        // As AstrBot: a sentence that cannot be spoken is skipped, the rest still is.
                        Err(e) => tracing::warn!(run.id = %sink.label(), error = %e, "TTS failed for a sentence; skipped"),
                    }
                }
            }
        }
        if spoken > 0 {
            sink.finished(first.unwrap_or(0.0), started.elapsed().as_secs_f64(), speech.tts.name());
        }
    })
}

/// The current synthesis' result; never resolves when there is none.
async fn in_flight(current: &mut Option<Synthesis>) -> (String, Result<bytes::Bytes, TtsError>) {
    match current {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
