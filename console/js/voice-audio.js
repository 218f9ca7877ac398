// Audio for the Voice page: the microphone as 16 kHz PCM frames with voice activity detection,
// and a player that plays the spoken reply's sentences in the order they arrive.

const FRAME_MS = 20;

/** Base64 of bytes (btoa takes a binary string; built in slices so it never overflows the stack). */
export function base64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/**
 * Voice activity detection on 20 ms frame levels. The noise floor follows the quiet frames; speech
 * starts after 60 ms above the threshold (the 300 ms before it are kept, so the first syllable is
 * not lost) and ends after `silenceMs` below it, or at `maxMs`.
 */
export class Vad {
  constructor({ onStart, onFrame, onEnd, silenceMs = 800, maxMs = 30000 }) {
    Object.assign(this, { onStart, onFrame, onEnd });
    this.floor = 0.004;
    this.speaking = false;
    this.loud = 0;
    this.quiet = 0;
    this.length = 0;
    this.preroll = [];
    this.silenceFrames = Math.round(silenceMs / FRAME_MS);
    this.maxFrames = Math.round(maxMs / FRAME_MS);
  }

  threshold() {
    return Math.max(0.012, this.floor * 3);
  }

  push(pcm, rms) {
    const loud = rms > this.threshold();
    if (!this.speaking) {
      if (!loud) this.floor = this.floor * 0.95 + Math.min(rms, 0.05) * 0.05;
      this.preroll.push(pcm);
      if (this.preroll.length > 15) this.preroll.shift();
      this.loud = loud ? this.loud + 1 : 0;
      if (this.loud >= 3) {
        this.speaking = true;
        this.quiet = 0;
        this.length = this.preroll.length;
        this.onStart(this.preroll.splice(0));
      }
      return;
    }
    this.length++;
    this.onFrame(pcm);
    this.quiet = rms < this.threshold() * 0.7 ? this.quiet + 1 : 0;
    if (this.quiet >= this.silenceFrames || this.length >= this.maxFrames) this.end();
  }

  /** Ends the current utterance now (if any). */
  end() {
    if (!this.speaking) return;
    this.speaking = false;
    this.loud = 0;
    this.onEnd();
  }

  /** Forgets the current utterance without reporting its end. */
  reset() {
    this.speaking = false;
    this.loud = 0;
    this.preroll = [];
  }
}

/** The microphone through the PCM worklet: calls `onFrame(Uint8Array pcm, rms)` every 20 ms. */
export class Microphone {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.ctx = null;
    this.stream = null;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    this.ctx = new AudioContext({ latencyHint: 'interactive' });
    await this.ctx.audioWorklet.addModule(new URL('./pcm-worklet.js', import.meta.url));
    const source = this.ctx.createMediaStreamSource(this.stream);
    const node = new AudioWorkletNode(this.ctx, 'pcm-16k', { numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1 });
    node.port.onmessage = (e) => this.onFrame(new Uint8Array(e.data.pcm), e.data.rms);
    source.connect(node);
    this.node = node;
    if (this.ctx.state !== 'running') await this.ctx.resume();
  }

  stop() {
    if (this.node) this.node.port.onmessage = null;
    for (const t of this.stream?.getTracks() ?? []) t.stop();
    this.ctx?.close().catch(() => {});
    this.ctx = null;
    this.stream = null;
    this.node = null;
  }
}

/**
 * Plays WAV files back to back in the order they were given, however long each takes to decode.
 * `clear()` (interrupt, `stop_play`) silences what plays and drops what waits.
 */
export class Player {
  constructor() {
    this.ctx = null;
    this.chain = Promise.resolve();
    this.generation = 0;
    this.sources = new Set();
    this.nextTime = 0;
  }

  /** Must be called from a click (browsers allow sound only after a user gesture). */
  unlock() {
    if (!this.ctx) this.ctx = new AudioContext({ latencyHint: 'interactive' });
    if (this.ctx.state !== 'running') this.ctx.resume().catch(() => {});
  }

  get playing() {
    return this.sources.size > 0;
  }

  /** Queues `wav` (bytes); `onStart`/`onEnd` are called when it starts and finishes playing. */
  enqueue(wav, { onStart, onEnd, onError } = {}) {
    this.unlock();
    const gen = this.generation;
    const decoded = this.ctx.decodeAudioData(wav.buffer.slice(wav.byteOffset, wav.byteOffset + wav.byteLength));
    this.chain = this.chain.then(async () => {
      let buffer;
      try {
        buffer = await decoded;
      } catch (err) {
        onError?.(err);
        return;
      }
      if (gen !== this.generation) return;
      const src = this.ctx.createBufferSource();
      src.buffer = buffer;
      src.connect(this.ctx.destination);
      const at = Math.max(this.ctx.currentTime + 0.02, this.nextTime);
      this.nextTime = at + buffer.duration;
      this.sources.add(src);
      src.onended = () => {
        this.sources.delete(src);
        if (gen === this.generation) onEnd?.();
      };
      src.start(at);
      const delay = Math.max(0, (at - this.ctx.currentTime) * 1000);
      setTimeout(() => {
        if (gen === this.generation) onStart?.();
      }, delay);
    });
  }

  clear() {
    this.generation += 1;
    for (const s of this.sources) {
      s.onended = null;
      try {
        s.stop();
      } catch {
        // Not started yet.
      }
    }
    this.sources.clear();
    this.chain = Promise.resolve();
    this.nextTime = 0;
  }

  close() {
    this.clear();
    this.ctx?.close().catch(() => {});
    this.ctx = null;
  }
}
