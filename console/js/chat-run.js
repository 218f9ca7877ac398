// Messages of the chat page: a saved message from history, and a reply that is streaming (or
// being replayed after a reload) from a run's events. Replies are markdown rendered safely;
// the user's own text is shown as typed. Attachments are shown from this origin only.

import { clear, h } from './dom.js';
import { renderMarkdown } from './markdown.js';

/** The download URL of an attachment (same origin; the dashboard cookie authorises it). */
export function fileUrl(id) {
  return `/api/v1/file?attachment_id=${encodeURIComponent(id)}`;
}

function attachmentView(kind, id, name) {
  const label = name || id;
  if (kind === 'image') {
    return h('a', { href: fileUrl(id), target: '_blank', rel: 'noopener', class: 'attachment' },
      h('img', { src: fileUrl(id), alt: label, loading: 'lazy' }));
  }
  if (kind === 'record') {
    return h('figure', { class: 'attachment' }, h('audio', { controls: true, preload: 'none', src: fileUrl(id) }),
      h('figcaption', { text: label }));
  }
  return h('a', { href: fileUrl(id), download: label, class: 'attachment file', text: label });
}

function partsOf(content) {
  return Array.isArray(content?.message) ? content.message : [];
}

function textOf(parts) {
  return parts.filter((p) => p?.type === 'plain' && typeof p.text === 'string').map((p) => p.text).join('');
}

function attachmentsOf(parts) {
  return parts.filter((p) => p && p.attachment_id && ['image', 'record', 'file', 'video'].includes(p.type));
}

/** A user's message: its text as typed, its attachments. */
export function userMessage(text, attachments = []) {
  return h('article', { class: 'msg user', 'aria-label': 'You' },
    text ? h('p', { class: 'plain', text }) : null,
    attachments.length ? h('div', { class: 'attachments' }, attachments.map((a) => attachmentView(a.type, a.attachment_id, a.filename))) : null);
}

/**
 * A reply. `apply(event)` takes the chat SSE events of its run; the view re-renders at most once
 * per animation frame, so a fast stream costs one markdown pass per frame, not per token.
 */
export class Reply {
  constructor() {
    this.text = '';
    this.reasoning = '';
    this.error = null;
    this.stats = null;
    this.media = [];
    this.state = 'streaming';
    this.runId = null;
    this.lastEventId = null;
    this.scheduled = false;
    this.body = h('div', { class: 'md' });
    this.thinking = h('details', { class: 'reasoning', hidden: true }, h('summary', { text: 'Reasoning' }), h('div', { class: 'plain' }));
    this.extras = h('div', { class: 'attachments' });
    this.alert = h('p', { class: 'alert', role: 'alert', hidden: true });
    this.footer = h('p', { class: 'meta' });
    this.el = h('article', { class: 'msg bot', 'aria-label': 'Reply', 'aria-busy': 'true', dataset: { state: 'streaming' } },
      this.thinking, this.body, this.extras, this.alert, this.footer);
  }

  /** A saved reply (from history). */
  static saved(content) {
    const r = new Reply();
    const parts = partsOf(content);
    r.text = textOf(parts);
    r.reasoning = typeof content?.reasoning === 'string' ? content.reasoning : '';
    r.error = typeof content?.error === 'string' ? content.error : null;
    r.media = attachmentsOf(parts).map((p) => ({ type: p.type, attachment_id: p.attachment_id, filename: p.filename }));
    r.stats = content?.agent_stats ?? null;
    r.finish(content?.interrupted ? 'stopped' : 'done');
    return r;
  }

  apply(ev) {
    const d = ev.data;
    if (ev.id) this.lastEventId = ev.id;
    switch (d?.type) {
      case 'run_started':
        this.runId = d.data?.run_id ?? this.runId;
        break;
      case 'plain':
        if (d.chain_type === 'reasoning') this.reasoning += String(d.data ?? '');
        else if (d.chain_type !== 'proactive') this.text += String(d.data ?? '');
        break;
      case 'complete':
        if (d.chain_type === 'proactive') break;
        // The whole reply: authoritative over the deltas.
        if (typeof d.data === 'string') this.text = d.data;
        if (typeof d.reasoning === 'string' && d.reasoning) this.reasoning = d.reasoning;
        break;
      case 'agent_stats':
        this.stats = d.data;
        break;
      case 'attachment_saved':
        if (d.data?.id) this.media.push({ type: d.data.type, attachment_id: d.data.id });
        break;
      case 'error':
        this.error = String(d.data ?? 'The reply failed');
        break;
      case 'end':
        this.finish(this.state === 'stopping' ? 'stopped' : this.error ? 'error' : 'done');
        return;
      default:
        return; // session_id, user_message_saved, message_saved, media names: nothing to show
    }
    this.schedule();
  }

  /** Stop was asked for: the run's end will say `stopped`. */
  stopping() {
    if (this.state === 'streaming') this.state = 'stopping';
    this.schedule();
  }

  finish(state) {
    this.state = state;
    this.render();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.render();
    });
  }

  render() {
    const busy = this.state === 'streaming' || this.state === 'stopping';
    this.el.dataset.state = this.state;
    this.el.setAttribute('aria-busy', busy ? 'true' : 'false');
    clear(this.body).append(renderMarkdown(this.text));
    this.thinking.hidden = !this.reasoning;
    this.thinking.lastChild.textContent = this.reasoning;
    clear(this.extras);
    for (const m of this.media) this.extras.append(attachmentView(m.type, m.attachment_id, m.filename));
    this.alert.hidden = !this.error;
    this.alert.textContent = this.error ?? '';
    const bits = [];
    if (this.state === 'streaming') bits.push('streaming…');
    if (this.state === 'stopping') bits.push('stopping…');
    if (this.state === 'stopped') bits.push('stopped');
    const usage = this.stats?.token_usage;
    if (usage) bits.push(`${(usage.input_other ?? 0) + (usage.input_cached ?? 0)} tokens in, ${usage.output ?? 0} out`);
    if (typeof this.stats?.time_to_first_token === 'number') bits.push(`first token ${this.stats.time_to_first_token.toFixed(2)} s`);
    // The provider that answered: a fallback's when the one asked for failed.
    if (this.stats?.provider_id) bits.push(`by ${this.stats.provider_id}${this.stats.model ? `/${this.stats.model}` : ''}`);
    this.footer.textContent = bits.join(' · ');
  }
}

/**
 * The views of saved history rows, oldest first. With `replaying`, a reply still being written is
 * left out: its run is replayed from its start instead.
 */
export function historyViews(rows, replaying = false) {
  const out = [];
  for (const row of rows) {
    const c = row.content ?? {};
    if (c.type === 'user') {
      const parts = partsOf(c);
      out.push(userMessage(textOf(parts), attachmentsOf(parts)));
    } else if (c.type === 'bot' && !(replaying && c.streaming)) {
      out.push(Reply.saved(c).el);
    }
  }
  return out;
}
