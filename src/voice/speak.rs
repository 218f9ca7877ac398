//! The speech worker of a run: LLM deltas → [`Segmenter`] → TTS, one audio file per sentence.
//!
//! Two tasks joined by a bounded channel: the segmenter cuts sentences as deltas arrive, the TTS
//! task synthesises them one after another and appends `Audio` events to the run in order. So
//! sentence 1 is spoken while sentence 2 is still being generated. Both stop at once when the
//! run's token is cancelled (dropping an in-flight synthesis aborts its request or process).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::segmenter::Segmenter;
use crate::agent::events::AgentEvent;
use crate::agent::pipeline::Speech;
use crate::agent::runs::RunHandle;

/// Sentences waiting for TTS; beyond this the segmenter (and so the model stream) waits.
const SENTENCE_QUEUE: usize = 16;

/// Starts the worker; the returned handle completes when every sentence was spoken (or on cancel).
pub fn spawn_worker(
    speech: Speech,
    mut deltas: mpsc::Receiver<String>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    run: &Arc<RunHandle>,
) -> JoinHandle<()> {
    let (tx, mut sentences) = mpsc::channel::<String>(SENTENCE_QUEUE);
    let seg_cancel = cancel.clone();
    let min = speech.min_sentence_chars;
    tasks.spawn(async move {
        let mut seg = Segmenter::new(min);
        loop {
            let d = tokio::select! {
                _ = seg_cancel.cancelled() => return,
                d = deltas.recv() => d,
            };
            let done = d.is_none();
            let out = match d {
                Some(d) => seg.push(&d),
                None => seg.finish(),
            };
            for s in out {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
        }
    });
    let run = run.clone();
    tasks.spawn(async move {
        let started = Instant::now();
        let mut first: Option<f64> = None;
        let mut spoken = 0usize;
        loop {
            let sentence = tokio::select! {
                _ = cancel.cancelled() => return,
                s = sentences.recv() => s,
            };
            let Some(sentence) = sentence else { break };
            let audio = tokio::select! {
                _ = cancel.cancelled() => return,
                a = speech.tts.synthesize(&sentence) => a,
            };
            match audio {
                Ok(audio) => {
                    first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                    spoken += 1;
                    run.push(AgentEvent::Audio { text: sentence, audio, mime: speech.tts.mime().to_string() });
                }
                // As AstrBot: a sentence that cannot be spoken is skipped, the rest still is.
                Err(e) => tracing::warn!(run.id = %run.run_id, error = %e, "TTS failed for a sentence; skipped"),
            }
        }
        if spoken > 0 {
            run.push(AgentEvent::TtsStats {
                first_frame_secs: first.unwrap_or(0.0),
                total_secs: started.elapsed().as_secs_f64(),
                tts: speech.tts.name().to_string(),
            });
        }
    })
}
