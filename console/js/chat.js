// The chat page: pick a username, see that user's sessions, chat in one with a streaming reply,
// stop it, attach files. The user and the session are kept in the address (#/chat?user=…&session=…),
// so a reload comes back to them; a reply still being written when the page was left is
// replayed from its run and followed to its end (astrgate's runs outlive their requests).

import { api, query, stream } from './api.js';
import { alertBox, clear, field, h, when } from './dom.js';
import { Reply, historyViews, userMessage } from './chat-run.js';
import { sseEvents } from './sse.js';

const LAST_USER = 'astrgate.console.chatUser';
const PAGE_SIZE = 100;

function sessionTitle(s) {
  return (s.display_name && s.display_name.trim()) || 'New chat';
}

function sizeText(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${Math.round(n / (1 << 10))} KiB`;
  return `${n} B`;
}

export function mountChat(root, ctx) {
  let alive = true;
  let user = ctx.params.get('user') || localStorage.getItem(LAST_USER) || ctx.user;
  let session = ctx.params.get('session') || null;
  let page = 1;
  let running = null; // {reply, controller, session}
  let uploads = []; // {file, status: 'uploading'|'ready'|'failed', data, chip}
  let loadSeq = 0;

  const alert = alertBox();
  const userField = field('Username', { name: 'chat-user', autocomplete: 'off', value: user, maxlength: 255 });
  const userForm = h('form', { class: 'user-form' }, userField.row, h('button', { type: 'submit', text: 'Show sessions' }));
  // A listbox, not buttons or links: a session's title is whatever its first message said, and
  // must not be mistaken for the page's own controls.
  const sessionList = h('ul', { class: 'session-list', role: 'listbox', 'aria-label': 'Sessions' });
  const newChat = h('button', { type: 'button', class: 'primary', text: 'New chat' });
  const aside = h('aside', { class: 'sessions card', 'aria-label': 'Sessions of the user' }, userForm, newChat, h('h2', { text: 'Sessions' }), sessionList);

  const heading = h('h2', { class: 'conv-title', text: 'New chat' });
  const deleteSession = h('button', { type: 'button', class: 'quiet', text: 'Delete session', hidden: true });
  const older = h('button', { type: 'button', class: 'quiet', text: 'Show older messages', hidden: true });
  const log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': 'History' });
  const message = field('Message', { tag: 'textarea', name: 'message', rows: 3, placeholder: 'Write a message (Enter sends, Shift+Enter for a new line)' });
  const fileInput = h('input', { type: 'file', multiple: true, id: 'chat-files', class: 'visually-hidden' });
  const attachLabel = h('label', { for: 'chat-files', class: 'button', text: 'Attach files' });
  const chips = h('ul', { class: 'chips', 'aria-label': 'Attachments' });
  const send = h('button', { type: 'submit', class: 'primary', text: 'Send' });
  const stop = h('button', { type: 'button', text: 'Stop', disabled: true });
  const composer = h('form', { class: 'composer' }, chips, message.row,
    h('div', { class: 'row' }, fileInput, attachLabel, h('span', { class: 'spacer' }), stop, send));
  const conversation = h('section', { class: 'conversation card', 'aria-label': 'Conversation' },
    h('div', { class: 'row' }, heading, h('span', { class: 'spacer' }), deleteSession), older, log, alert.el, composer);
  root.append(h('h1', { text: 'Chat' }), h('div', { class: 'chat' }, aside, conversation));

  function remember() {
    ctx.setParams({ user, session });
    localStorage.setItem(LAST_USER, user);
  }

  function updateButtons() {
    const busy = Boolean(running && running.session === session);
    const uploading = uploads.some((u) => u.status === 'uploading');
    send.disabled = busy || uploading || !user;
    stop.disabled = !busy;
    deleteSession.hidden = !session;
  }

  async function loadSessions() {
    try {
      const data = await api(`/api/v1/chat/sessions${query({ username: user, page: 1, page_size: 100 })}`);
      if (!alive) return;
      clear(sessionList);
      if (!data.sessions.length) sessionList.append(h('li', { class: 'empty', role: 'presentation', text: `No sessions for ${user} yet.` }));
      const items = data.sessions.map((s) => {
        const current = s.session_id === session;
        if (current) heading.textContent = sessionTitle(s);
        return h('li', {
          role: 'option', class: 'session', 'aria-selected': current ? 'true' : 'false', tabindex: current ? 0 : -1,
          dataset: { sessionId: s.session_id }, onclick: () => open(s.session_id),
        }, h('span', { class: 'title', text: sessionTitle(s) }), h('span', { class: 'hint', text: `${s.platform_id} · ${when(s.updated_at)}` }));
      });
      if (items.length && !items.some((li) => li.tabIndex === 0)) items[0].tabIndex = 0;
      sessionList.append(...items);
    } catch (err) {
      if (alive) alert.show(`Could not load the sessions: ${err.message}`);
    }
  }

  function detach() {
    // Leaving a session stops reading its run, not the run: it goes on and is saved.
    if (running) running.controller.abort();
    running = null;
  }

  /** Reads a run's events into `reply` until its end (or until the page stops reading). */
  async function follow(res, reply, controller, sid) {
    running = { reply, controller, session: sid };
    updateButtons();
    try {
      for await (const ev of sseEvents(res)) {
        if (ev.data?.type === 'session_id' && ev.data.session_id && !session) {
          session = ev.data.session_id;
          running.session = session;
          remember();
          updateButtons();
        }
        reply.apply(ev);
        log.scrollTop = log.scrollHeight;
      }
      if (reply.state === 'streaming' || reply.state === 'stopping') reply.finish(reply.state === 'stopping' ? 'stopped' : 'done');
    } catch (err) {
      if (!controller.signal.aborted) {
        reply.error = `The stream broke off: ${err.message}. Reload to pick it up again.`;
        reply.finish('error');
      }
    } finally {
      if (running?.reply === reply) running = null;
      if (alive) {
        updateButtons();
        loadSessions();
      }
    }
  }

  async function open(sid, { keepPage = false } = {}) {
    detach();
    session = sid;
    if (!keepPage) page = 1;
    remember();
    alert.clear();
    clear(log);
    older.hidden = true;
    updateButtons();
    loadSessions();
    if (!sid) {
      heading.textContent = 'New chat';
      message.input.focus();
      return;
    }
    const seq = ++loadSeq;
    let detail;
    try {
      detail = await api(`/api/v1/chat/sessions/${encodeURIComponent(sid)}${query({ username: user, page, page_size: PAGE_SIZE })}`);
    } catch (err) {
      if (alive && seq === loadSeq) alert.show(`Could not open the session: ${err.message}`);
      return;
    }
    if (!alive || seq !== loadSeq) return;
    heading.textContent = sessionTitle(detail.session);
    older.hidden = !detail.has_more;
    const run = detail.active_runs?.[0];
    log.append(...historyViews(detail.history, Boolean(run)));
    if (run?.run_id) {
      // A reply is still being written: replay its run from the start and follow it.
      const reply = new Reply();
      log.append(reply.el);
      const controller = new AbortController();
      try {
        const res = await stream(`/api/v1/chat/runs/${encodeURIComponent(run.run_id)}/stream${query({ username: user })}`, { signal: controller.signal });
        if (!alive || seq !== loadSeq) {
          controller.abort();
          return;
        }
        follow(res, reply, controller, sid);
      } catch (err) {
        reply.error = `Could not follow the reply: ${err.message}`;
        reply.finish('error');
      }
    }
    log.scrollTop = log.scrollHeight;
  }

  function chip(u) {
    const remove = h('button', { type: 'button', class: 'quiet', text: 'Remove', 'aria-label': `Remove ${u.file.name}` });
    const status = h('span', { class: 'hint' });
    const li = h('li', { class: 'chip' }, h('span', { text: u.file.name }), status, remove);
    remove.addEventListener('click', () => {
      uploads = uploads.filter((x) => x !== u);
      li.remove();
      updateButtons();
    });
    u.render = () => {
      status.textContent = u.status === 'uploading' ? 'uploading…'
        : u.status === 'failed' ? `failed: ${u.error}` : `${u.data.type}, ${sizeText(u.data.size)}`;
      li.dataset.status = u.status;
    };
    u.render();
    return li;
  }

  async function upload(file) {
    const u = { file, status: 'uploading' };
    uploads.push(u);
    chips.append(chip(u));
    updateButtons();
    const form = new FormData();
    form.append('file', file, file.name);
    try {
      u.data = await api('/api/v1/file', { method: 'POST', body: form });
      u.status = 'ready';
    } catch (err) {
      u.status = 'failed';
      u.error = err.message;
    }
    u.render();
    updateButtons();
  }

  async function submit() {
    alert.clear();
    const text = message.input.value.trim();
    const ready = uploads.filter((u) => u.status === 'ready');
    if (!text && !ready.length) {
      alert.show('Write a message or attach a file.');
      return;
    }
    const parts = [];
    if (text) parts.push({ type: 'plain', text });
    const attachments = ready.map((u) => ({ type: u.data.type, attachment_id: u.data.attachment_id, filename: u.data.filename }));
    parts.push(...attachments);
    const body = { username: user, message: parts };
    if (session) body.session_id = session;
    send.disabled = true;
    const controller = new AbortController();
    let res;
    try {
      res = await stream('/api/v1/chat', { method: 'POST', body, signal: controller.signal });
    } catch (err) {
      alert.show(`Not sent: ${err.message}`);
      updateButtons();
      return;
    }
    message.input.value = '';
    uploads = [];
    clear(chips);
    log.append(userMessage(text, attachments));
    const reply = new Reply();
    log.append(reply.el);
    log.scrollTop = log.scrollHeight;
    follow(res, reply, controller, session);
  }

  userForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = userField.input.value.trim();
    if (!next) {
      alert.show('Enter a username.');
      return;
    }
    if (next !== user) {
      user = next;
      open(null);
    } else loadSessions();
  });
  newChat.addEventListener('click', () => open(null));
  // The listbox's keys: arrows move, Enter or Space opens.
  sessionList.addEventListener('keydown', (e) => {
    const items = [...sessionList.querySelectorAll('[role=option]')];
    const at = items.indexOf(document.activeElement);
    if (at < 0) return;
    let next = null;
    if (e.key === 'ArrowDown') next = items[Math.min(at + 1, items.length - 1)];
    else if (e.key === 'ArrowUp') next = items[Math.max(at - 1, 0)];
    else if (e.key === 'Home') next = items[0];
    else if (e.key === 'End') next = items.at(-1);
    else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      open(items[at].dataset.sessionId);
      return;
    } else return;
    e.preventDefault();
    for (const it of items) it.tabIndex = it === next ? 0 : -1;
    next.focus();
  });
  older.addEventListener('click', () => {
    page += 1;
    open(session, { keepPage: true });
  });
  deleteSession.addEventListener('click', async () => {
    if (!session || !window.confirm(`Delete this session of ${user} and its whole history?`)) return;
    try {
      await api(`/api/v1/chat/sessions/${encodeURIComponent(session)}${query({ username: user })}`, { method: 'DELETE' });
      open(null);
    } catch (err) {
      alert.show(`Could not delete the session: ${err.message}`);
    }
  });
  composer.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!send.disabled) submit();
  });
  message.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (!send.disabled) submit();
    }
  });
  stop.addEventListener('click', async () => {
    if (!running) return;
    running.reply.stopping();
    stop.disabled = true;
    try {
      await api(`/api/v1/chat/sessions/${encodeURIComponent(running.session)}/stop${query({ username: user })}`, { method: 'POST' });
    } catch (err) {
      alert.show(`Could not stop the reply: ${err.message}`);
    }
  });
  fileInput.addEventListener('change', () => {
    for (const f of fileInput.files) upload(f);
    fileInput.value = '';
  });

  open(session);
  return {
    update(params) {
      const u = params.get('user') || user;
      const s = params.get('session') || null;
      if (u !== user || s !== session) {
        user = u;
        userField.input.value = u;
        open(s);
      }
    },
    unmount() {
      alive = false;
      detach();
    },
  };
}
