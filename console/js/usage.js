// Usage per key per UTC day (`GET /api/v1/api-keys/{key_id}/usage?days=N`): a key picker, the
// window, the totals, a daily chart of tokens and requests, and the table of days. The chart is
// SVG built element by element (no HTML strings, no inline script or style), like the rest.

import { api, query } from './api.js';
import { alertBox, clear, h, uid } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const WINDOWS = [7, 30, 90];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

const number = (n) => Number(n ?? 0).toLocaleString();
const seconds = (n) => `${Number(n ?? 0).toLocaleString(undefined, { maximumFractionDigits: 1 })} s`;

/** Bars of tokens per day (requests as a thin bar beside them), with the largest labelled. */
function chart(days) {
  const width = 720;
  const height = 200;
  const pad = { left: 8, right: 8, top: 18, bottom: 22 };
  const inner = { w: width - pad.left - pad.right, h: height - pad.top - pad.bottom };
  const maxTokens = Math.max(1, ...days.map((d) => d.total_tokens));
  const maxRequests = Math.max(1, ...days.map((d) => d.requests));
  const step = inner.w / days.length;
  const bar = Math.max(1, step * 0.6);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': uid('chart') });
  const title = s('title', { id: svg.getAttribute('aria-labelledby') });
  const busiest = days.reduce((a, b) => (b.total_tokens > a.total_tokens ? b : a), days[0]);
  title.textContent = `Tokens per day over ${days.length} days; the busiest day, ${busiest.date}, used ${number(busiest.total_tokens)} tokens.`;
  svg.append(title, s('line', { class: 'axis', x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom }));
  days.forEach((d, i) => {
    const x = pad.left + i * step + (step - bar) / 2;
    const th = (d.total_tokens / maxTokens) * inner.h;
    const rh = (d.requests / maxRequests) * inner.h;
    const tokens = s('rect', { class: 'bar', x, y: pad.top + inner.h - th, width: bar * 0.7, height: th });
    const requests = s('rect', { class: 'bar requests', x: x + bar * 0.72, y: pad.top + inner.h - rh, width: bar * 0.28, height: rh });
    const tip = s('title');
    tip.textContent = `${d.date}: ${number(d.total_tokens)} tokens, ${number(d.requests)} requests, ${number(d.runs)} runs`;
    tokens.append(tip);
    svg.append(tokens, requests);
    const every = Math.ceil(days.length / 8);
    if (i % every === 0 || i === days.length - 1) {
      const label = s('text', { x: x + bar / 2, y: height - 6, 'text-anchor': 'middle' });
      label.textContent = d.date.slice(5);
      svg.append(label);
    }
  });
  const top = s('text', { x: pad.left, y: 12 });
  const peakTokens = Math.max(...days.map((d) => d.total_tokens));
  top.textContent = peakTokens
    ? `up to ${number(peakTokens)} tokens a day (wide bars) and ${number(Math.max(...days.map((d) => d.requests)))} requests a day (thin bars)`
    : 'no tokens in this window; thin bars: requests a day';
  svg.append(top);
  return svg;
}

function totals(u) {
  const item = (label, value) => h('div', {}, h('dt', { text: label }), h('dd', { text: value }));
  return h('dl', { class: 'totals' },
    item('Requests', number(u.requests)),
    item('Runs', number(u.runs)),
    item('Prompt tokens', number(u.prompt_tokens)),
    item('Completion tokens', number(u.completion_tokens)),
    item('Audio in', seconds(u.audio_in_seconds)),
    item('Audio out', seconds(u.audio_out_seconds)));
}

function table(days) {
  const cols = ['Date', 'Requests', 'Runs', 'Prompt tokens', 'Completion tokens', 'Audio in', 'Audio out'];
  const body = h('tbody');
  for (const d of [...days].reverse()) {
    body.append(h('tr', {},
      h('th', { scope: 'row', text: d.date }),
      h('td', { text: number(d.requests) }),
      h('td', { text: number(d.runs) }),
      h('td', { text: number(d.prompt_tokens) }),
      h('td', { text: number(d.completion_tokens) }),
      h('td', { text: seconds(d.audio_in_seconds) }),
      h('td', { text: seconds(d.audio_out_seconds) })));
  }
  return h('div', { class: 'scroll' }, h('table', { class: 'usage' },
    h('caption', { text: 'Usage per day (UTC), newest first' }),
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', text: c })))),
    body));
}

export function mountUsage(root) {
  let alive = true;
  let seq = 0;
  const alert = alertBox();
  const keyId = uid('key');
  const daysId = uid('days');
  const keySelect = h('select', { id: keyId, name: 'key' });
  const daysSelect = h('select', { id: daysId, name: 'days' },
    WINDOWS.map((n) => h('option', { value: String(n), text: `${n} days`, selected: n === 30 })));
  const out = h('section', { class: 'card', 'aria-live': 'polite', 'aria-labelledby': 'usage-title' },
    h('h2', { id: 'usage-title', text: 'Usage' }));
  root.append(h('h1', { text: 'Usage' }),
    h('section', { class: 'card' },
      h('div', { class: 'grid2' },
        h('div', { class: 'field' }, h('label', { for: keyId, text: 'Key' }), keySelect),
        h('div', { class: 'field' }, h('label', { for: daysId, text: 'Days' }), daysSelect)),
      h('p', { class: 'hint', text: 'Counted per key per UTC day: requests, runs, tokens as the upstream reports them, and audio seconds. Written every few seconds, so the last seconds may still be on their way.' }),
      alert.el),
    out);

  async function show() {
    const id = keySelect.value;
    const mine = ++seq;
    alert.clear();
    if (!id) return;
    try {
      const u = await api(`/api/v1/api-keys/${encodeURIComponent(id)}/usage${query({ days: daysSelect.value })}`);
      if (!alive || mine !== seq) return;
      const name = keySelect.selectedOptions[0]?.textContent ?? id;
      clear(out).append(h('h2', { id: 'usage-title', text: `Usage of ${name}` }), totals(u), chart(u.days), table(u.days));
    } catch (err) {
      if (alive && mine === seq) alert.show(`Could not load the usage: ${err.message}`);
    }
  }

  async function load() {
    try {
      const keys = await api('/api/v1/api-keys');
      if (!alive) return;
      clear(keySelect);
      if (!keys.length) {
        clear(out).append(h('h2', { id: 'usage-title', text: 'Usage' }), h('p', { class: 'empty', text: 'No keys yet: create one on the API keys page.' }));
        return;
      }
      for (const k of keys) keySelect.append(h('option', { value: k.key_id, text: `${k.name} (${k.key_prefix}…)` }));
      await show();
    } catch (err) {
      if (alive) alert.show(`Could not load the keys: ${err.message}`);
    }
  }

  keySelect.addEventListener('change', show);
  daysSelect.addEventListener('change', show);
  load();
  return { unmount: () => { alive = false; } };
}
