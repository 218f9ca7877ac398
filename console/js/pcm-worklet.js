// AudioWorklet: the microphone at the context's rate → 16 kHz mono signed 16-bit PCM, the Live
// protocol's format. Every 20 ms of output is posted to the page as {pcm: ArrayBuffer, rms}, the
// level being what the page's voice activity detection reads. Downsampling averages the input
// samples each output sample covers (a box filter: cheap, and it keeps most aliasing out of the
// speech band).

const OUT_RATE = 16000;
const FRAME = 320; // 20 ms at 16 kHz

class Pcm16k extends AudioWorkletProcessor {
  constructor() {
    super();
    // `sampleRate` is the context's rate (a global of the worklet scope).
    this.step = sampleRate / OUT_RATE;
    this.pos = 0; // input position of the next output sample, relative to the current block
    this.acc = 0;
    this.n = 0;
    this.prev = 0;
    this.out = new Int16Array(FRAME);
    this.len = 0;
    this.energy = 0;
  }

  emit(v) {
    const s = Math.max(-1, Math.min(1, v));
    this.out[this.len++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    this.energy += s * s;
    if (this.len === FRAME) {
      const pcm = this.out.buffer;
      this.port.postMessage({ pcm, rms: Math.sqrt(this.energy / FRAME) }, [pcm]);
      this.out = new Int16Array(FRAME);
      this.len = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || !input.length) return true;
    // Mono: the mean of the channels.
    const frames = input[0].length;
    const mono = new Float32Array(frames);
    for (const ch of input) for (let i = 0; i < frames; i++) mono[i] += ch[i] / input.length;
    if (this.step >= 1) {
      let next = this.pos + this.step;
      for (let i = 0; i < frames; i++) {
        this.acc += mono[i];
        this.n++;
        if (i + 1 >= next) {
          this.emit(this.acc / this.n);
          this.acc = 0;
          this.n = 0;
          next += this.step;
        }
      }
      this.pos = next - this.step - frames;
    } else {
      // A context slower than 16 kHz: linear interpolation.
      let t = this.pos;
      for (; t < frames; t += this.step) {
        const i = Math.floor(t);
        const a = i === 0 ? this.prev : mono[i - 1];
        const frac = t - i;
        this.emit(a + (mono[i] - a) * frac);
      }
      this.pos = t - frames;
      this.prev = mono[frames - 1];
    }
    return true;
  }
}

registerProcessor('pcm-16k', Pcm16k);
