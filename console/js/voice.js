// The Voice page: a spoken conversation over the Live socket (docs/live-api.md). The microphone
// goes out as 16 kHz PCM frames (an AudioWorklet), cut into utterances by voice activity
// detection; replies come back as one WAV per sentence, played in order, with a transcript.
// Interrupt with the button, or by speaking while the reply plays.
//
// The socket needs a dashboard token in its URL (browsers cannot send headers or, here, the
// cookie on a WebSocket): the page asks for a one-minute, socket-only token right before it
// connects (POST /api/v1/auth/socket-token, carried by the cookie) and keeps it nowhere.

import { api } from './api.js';
import { alertBox, clear, field, h } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { Microphone, Player, Vad, base64 } from './voice-audio.js';

const PART_FRAMES = 5; // 100 ms of audio per speaking_part

function b64bytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function mountVoice(root, ctx) {
  let alive = true;
  let ws = null;
  let mic = null;
  let turn = null; // the bot's current answer: {el, text, sentences: []}
  let answering = false; // between an utterance's end (or a typed message) and `end`
  let pending = []; // PCM frames waiting to be sent as one speaking_part
  let stampSeq = 0;
  let stamp = null;
  const player = new Player();

  const alert = alertBox();
  const status = h('p', { role: 'status', class: 'voice-status', text: 'Not connected.' });
  const level = h('meter', { min: 0, max: 0.3, low: 0.02, high: 0.2, value: 0, 'aria-label': 'Microphone level' });
  const startBtn = h('button', { type: 'button', class: 'primary', text: 'Start microphone' });
  const interruptBtn = h('button', { type: 'button', text: 'Interrupt', disabled: true });
  const bargeBox = h('input', { type: 'checkbox', id: 'barge-in', checked: true });
  const typed = field('Type instead', { name: 'typed', autocomplete: 'off', placeholder: 'Say something by typing' });
  const sayBtn = h('button', { type: 'submit', text: 'Say it' });
  const typedForm = h('form', { class: 'row typed' }, typed.row, sayBtn);
  const transcript = h('ol', { class: 'transcript', role: 'log', 'aria-live': 'polite', 'aria-label': 'Transcript' });
  root.append(
    h('h1', { text: 'Voice' }),
    h('section', { class: 'card voice' },
      h('p', { class: 'hint', text: `Talk with the model through the Live protocol, as ${ctx.user}. Spoken turns are saved to ${ctx.user}’s history (platform live).` }),
      h('div', { class: 'row' }, startBtn, interruptBtn, level,
        h('span', { class: 'check' }, bargeBox, h('label', { for: 'barge-in', text: 'Interrupt when I speak' }))),
      status, alert.el, typedForm),
    h('section', { class: 'card' }, h('h2', { text: 'Transcript' }), transcript),
  );

  const setStatus = (t) => { status.textContent = t; };
  const send = (frame) => {
    if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  };
  const refresh = () => {
    interruptBtn.disabled = !(answering || player.playing);
  };

  function line(who, text, cls) {
    const el = h('li', { class: `turn ${cls}` }, h('span', { class: 'who', text: who }), h('span', { class: 'text', text }));
    transcript.append(el);
    transcript.scrollTop = transcript.scrollHeight;
    return el;
  }

  /** The reply's caption, as markdown, at most once per frame. */
  function caption(t, text) {
    t.caption = text;
    if (t.scheduled) return;
    t.scheduled = true;
    requestAnimationFrame(() => {
      t.scheduled = false;
      clear(t.text).append(renderMarkdown(t.caption));
    });
  }

  function botTurn() {
    if (!turn) {
      const text = h('div', { class: 'text md' });
      const sentences = h('ol', { class: 'sentences', 'aria-label': 'Spoken sentences' });
      const el = h('li', { class: 'turn bot', dataset: { state: 'answering' } }, h('span', { class: 'who', text: 'Bot' }), text, sentences);
      transcript.append(el);
      turn = { el, text, sentences, caption: '', spoken: [] };
    }
    return turn;
  }

  function endTurn(state) {
    if (turn) turn.el.dataset.state = state;
    turn = null;
    answering = false;
    refresh();
  }

  /** Marks the current answer interrupted; its sentences not yet heard to the end were cut. */
  function cut() {
    if (!turn) return;
    turn.el.dataset.state = 'interrupted';
    for (const s of turn.sentences.querySelectorAll('.sentence:not([data-played="true"])')) s.dataset.played = 'cut';
  }

  /** Stops the answer: the server cancels the model and TTS; queued audio is dropped here. */
  function interrupt(reason) {
    player.clear();
    if (answering) send({ t: 'interrupt' });
    cut();
    setStatus(reason);
    refresh();
  }

  function onFrame(frame) {
    let f;
    try {
      f = JSON.parse(frame.data);
    } catch {
      return;
    }
    switch (f.t) {
      case 'user_msg':
        line('You', f.data?.text ?? '', 'user');
        setStatus('Thinking…');
        break;
      case 'bot_delta_chunk': {
        const t = botTurn();
        caption(t, t.caption + (f.data?.text ?? ''));
        break;
      }
      case 'bot_text_chunk': {
        const t = botTurn();
        t.spoken.push(f.data?.text ?? '');
        break;
      }
      case 'response': {
        const t = botTurn();
        const sentence = t.spoken.shift() ?? '';
        const item = h('li', { class: 'sentence', dataset: { played: 'false' }, text: sentence || '(audio)' });
        t.sentences.append(item);
        player.enqueue(b64bytes(f.data ?? ''), {
          onStart: () => { item.dataset.played = 'playing'; setStatus('Speaking…'); refresh(); },
          onEnd: () => { item.dataset.played = 'true'; refresh(); if (!player.playing && !answering) setStatus('Listening.'); },
          onError: () => { item.dataset.played = 'error'; },
        });
        refresh();
        break;
      }
      case 'bot_msg': {
        const t = botTurn();
        caption(t, f.data?.text ?? t.caption);
        break;
      }
      case 'stop_play':
        player.clear();
        cut();
        refresh();
        break;
      case 'end':
        endTurn(turn?.el.dataset.state === 'interrupted' ? 'interrupted' : 'done');
        if (!player.playing) setStatus(mic ? 'Listening.' : 'Connected.');
        break;
      case 'error':
        alert.show(`${f.data ?? 'Error'}${f.code ? ` (${f.code})` : ''}`);
        break;
      default:
        break; // metrics
    }
  }

  const vad = new Vad({
    onStart(preroll) {
      if ((answering || player.playing) && !bargeBox.checked) {
        vad.reset();
        return;
      }
      if (answering || player.playing) interrupt('Interrupted: go on, I am listening.');
      alert.clear();
      stampSeq += 1;
      stamp = `seg_${String(stampSeq).padStart(3, '0')}`;
      send({ t: 'start_speaking', stamp });
      pending = preroll;
      setStatus('Hearing you…');
    },
    onFrame(pcm) {
      pending.push(pcm);
      if (pending.length >= PART_FRAMES) flush();
    },
    onEnd() {
      flush();
      send({ t: 'end_speaking', stamp });
      answering = true;
      setStatus('Transcribing…');
      refresh();
    },
  });

  function flush() {
    if (!pending.length) return;
    const bytes = new Uint8Array(pending.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of pending) {
      bytes.set(p, at);
      at += p.length;
    }
    pending = [];
    send({ t: 'speaking_part', data: base64(bytes) });
  }

  async function connect() {
    const { token } = await api('/api/v1/auth/socket-token', { method: 'POST' });
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/live-chat/ws?token=${encodeURIComponent(token)}`);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error('the Live socket could not be opened'));
    });
    socket.onmessage = onFrame;
    socket.onclose = (e) => {
      if (ws !== socket) return;
      ws = null;
      stopMic();
      endTurn('done');
      if (alive) {
        setStatus('Disconnected.');
        if (e.code !== 1000) alert.show(`The Live socket closed${e.reason ? `: ${e.reason}` : ''} (${e.code}).`);
      }
    };
    ws = socket;
  }

  async function ensureSocket() {
    if (ws?.readyState === WebSocket.OPEN) return;
    setStatus('Connecting…');
    await connect();
    setStatus('Connected.');
  }

  function stopMic() {
    mic?.stop();
    mic = null;
    vad.end();
    level.value = 0;
    startBtn.textContent = 'Start microphone';
  }

  startBtn.addEventListener('click', async () => {
    player.unlock();
    if (mic) {
      stopMic();
      setStatus(ws ? 'Connected.' : 'Not connected.');
      return;
    }
    alert.clear();
    startBtn.disabled = true;
    try {
      await ensureSocket();
      mic = new Microphone((pcm, rms) => {
        level.value = rms;
        vad.push(pcm, rms);
      });
      await mic.start();
      startBtn.textContent = 'Stop microphone';
      setStatus('Listening.');
    } catch (err) {
      stopMic();
      alert.show(`Could not start: ${err.message}`);
      setStatus(ws ? 'Connected.' : 'Not connected.');
    } finally {
      startBtn.disabled = false;
    }
  });

  interruptBtn.addEventListener('click', () => interrupt('Interrupted.'));

  typedForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = typed.input.value.trim();
    if (!text) return;
    player.unlock();
    alert.clear();
    try {
      await ensureSocket();
    } catch (err) {
      alert.show(`Could not connect: ${err.message}`);
      return;
    }
    if (answering || player.playing) interrupt('Interrupted.');
    typed.input.value = '';
    // The server echoes it as `user_msg`, which puts it in the transcript.
    send({ t: 'text_input', text });
    answering = true;
    setStatus('Thinking…');
    refresh();
  });

  return {
    unmount() {
      alive = false;
      stopMic();
      player.close();
      const s = ws;
      ws = null;
      s?.close(1000, 'page left');
      clear(transcript);
    },
  };
}
