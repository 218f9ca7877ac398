// API keys: the list (one row per key), the create form, the new key shown once with a copy
// button, revoke and delete with a confirmation. Everything goes through the dashboard-only
// /api/v1/api-keys endpoints; an API key can never reach them.

import { api } from './api.js';
import { alertBox, append, clear, field, h, uid, when } from './dom.js';

// AstrBot 4.29.3's scopes, what each grants in astrgate (docs/api/auth.md), and the two that
// extend another scope: they are shown under it, labelled by their own part.
const SCOPES = [
  { name: 'chat', about: 'chat, sessions, history, stop and resume, the chat sockets' },
  { name: 'chat:admin', under: 'chat', label: 'admin', about: 'chat:admin — may act as the dashboard user' },
  { name: 'config', about: 'configs, profiles and routes; includes bot and provider' },
  { name: 'config:edit_admin', under: 'config', label: 'edit admin', about: 'config:edit_admin — stored and shown' },
  { name: 'file', about: 'upload and download attachments' },
  { name: 'im', about: 'proactive messages to web chat sessions and webhooks' },
  { name: 'provider', about: 'list the model providers' },
  { name: 'bot', about: 'stored and shown; astrgate has no bot management' },
  { name: 'persona', about: 'stored and shown; astrgate has no personas' },
  { name: 'data', about: 'stored and shown' },
  { name: 'plugin', about: 'stored and shown; astrgate has no plugins' },
  { name: 'mcp', about: 'stored and shown; astrgate has no MCP servers' },
  { name: 'skill', about: 'stored and shown; astrgate has no skills' },
];
const CHECKED = new Set(['chat']);

function statusOf(k) {
  if (k.is_revoked) return 'revoked';
  if (k.is_expired) return 'expired';
  return 'active';
}

/** A key's limits in words (`unlimited` when it has none). */
function limitsText(limits) {
  if (!limits || typeof limits !== 'object') return 'unlimited';
  const parts = [];
  if (limits.requests_per_minute != null) parts.push(`${limits.requests_per_minute}/min`);
  if (limits.concurrent_runs != null) parts.push(`${limits.concurrent_runs} at once`);
  if (limits.tokens_per_day != null) parts.push(`${limits.tokens_per_day} tokens/day`);
  return parts.length ? parts.join(', ') : 'unlimited';
}

// The three per-key limits (docs/api/governance.md): empty means unlimited.
const LIMITS = [
  { name: 'requests_per_minute', label: 'Requests per minute', max: 1000000 },
  { name: 'concurrent_runs', label: 'Concurrent runs', max: 100000 },
  { name: 'tokens_per_day', label: 'Tokens per day', max: 1000000000000 },
];

/** Number inputs for the limits, filled from `limits`; `read()` gives the object or an error. */
function limitInputs(limits = {}) {
  const fields = LIMITS.map((l) => {
    const f = field(l.label, { name: l.name, type: 'number', min: 1, max: l.max, step: 1, placeholder: 'unlimited', inputmode: 'numeric' });
    if (limits?.[l.name] != null) f.input.value = String(limits[l.name]);
    return { ...l, ...f };
  });
  return {
    rows: fields.map((f) => f.row),
    read() {
      const out = {};
      for (const f of fields) {
        const v = f.input.value.trim();
        if (!v) {
          out[f.name] = null;
          continue;
        }
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1 || n > f.max) return { error: `${f.label} must be a whole number from 1 to ${f.max} (or empty for unlimited).` };
        out[f.name] = n;
      }
      return { limits: out };
    },
  };
}

function scopeBoxes() {
  const boxes = new Map();
  const groups = new Map();
  const list = h('div', { class: 'scopes' });
  for (const s of SCOPES) {
    const id = uid('scope');
    const about = uid('about');
    const input = h('input', { type: 'checkbox', id, value: s.name, checked: CHECKED.has(s.name), 'aria-describedby': about });
    boxes.set(s.name, input);
    const row = h('div', { class: s.under ? 'scope sub' : 'scope' },
      input, h('label', { for: id, text: s.label ?? s.name }), h('span', { id: about, class: 'hint', text: s.about }));
    if (s.under) groups.get(s.under).append(row);
    else {
      const group = h('div', { class: 'scope-group' }, row);
      groups.set(s.name, group);
      list.append(group);
    }
  }
  // A sub-scope needs its parent: it is cleared and disabled without it.
  for (const s of SCOPES.filter((x) => x.under)) {
    const parent = boxes.get(s.under);
    const child = boxes.get(s.name);
    const sync = () => {
      child.disabled = !parent.checked;
      if (!parent.checked) child.checked = false;
    };
    parent.addEventListener('change', sync);
    sync();
  }
  return { list, selected: () => [...boxes.values()].filter((b) => b.checked).map((b) => b.value) };
}

function newKeyPanel() {
  const input = h('input', { readonly: true, class: 'secret', autocomplete: 'off', spellcheck: 'false' });
  const inputId = uid('newkey');
  input.id = inputId;
  const status = h('span', { role: 'status', class: 'hint' });
  const title = h('h2', { text: 'New key' });
  const copy = h('button', { type: 'button', text: 'Copy' });
  const done = h('button', { type: 'button', text: 'Done' });
  const panel = h('section', { class: 'card newkey', hidden: true, 'aria-live': 'polite' },
    title,
    h('p', { text: 'Copy the key now: it is shown only this once, and astrgate keeps only its hash.' }),
    h('div', { class: 'field' }, h('label', { for: inputId, text: 'New API key' }), input),
    h('div', { class: 'row' }, copy, done, status));
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = 'Copied to the clipboard.';
    } catch {
      input.select();
      status.textContent = 'Select the key and copy it (Ctrl+C).';
    }
  });
  done.addEventListener('click', () => {
    input.value = '';
    status.textContent = '';
    panel.hidden = true;
  });
  return {
    panel,
    show(name, key) {
      title.textContent = `New key “${name}”`;
      input.value = key;
      status.textContent = '';
      panel.hidden = false;
      input.focus();
      input.select();
    },
  };
}

export function mountKeys(root) {
  let alive = true;
  const alert = alertBox();
  const tableAlert = alertBox();
  const name = field('Name', { name: 'name', maxlength: 255, autocomplete: 'off', placeholder: 'my app' });
  const bound = field('Bound user (optional)', { name: 'bound', maxlength: 255, autocomplete: 'off', placeholder: 'any username' });
  const expires = field('Expires in (days)', { name: 'expires', type: 'number', min: 1, max: 36500, step: 1, placeholder: 'never' });
  const scopes = scopeBoxes();
  const limitFields = limitInputs();
  const create = h('button', { type: 'submit', class: 'primary', text: 'Create key' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'create-title', novalidate: true },
    h('h2', { id: 'create-title', text: 'Create a key' }),
    name.row,
    h('fieldset', {}, h('legend', { text: 'Scopes' }), scopes.list),
    h('div', { class: 'grid2' }, expires.row, bound.row),
    h('fieldset', {},
      h('legend', { text: 'Limits' }),
      h('div', { class: 'grid3' }, limitFields.rows),
      h('p', { class: 'hint', text: 'Empty is unlimited. Over a limit, requests get 429 (sockets an error frame); tokens count per UTC day as the upstream reports them.' })),
    alert.el, create);
  const fresh = newKeyPanel();
  const body = h('tbody');
  const table = h('table', { class: 'keys' },
    h('caption', { text: 'Keys' }),
    h('thead', {}, h('tr', {}, ...['Name', 'Key', 'Scopes', 'User', 'Created', 'Last used', 'Expires', 'Status', 'Limits', 'Actions']
      .map((t) => h('th', { scope: 'col', text: t })))),
    body);
  root.append(h('h1', { text: 'API keys' }), fresh.panel, form,
    h('section', { class: 'card' }, tableAlert.el, h('div', { class: 'scroll' }, table)));

  async function act(k, what) {
    const verb = what === 'revoke' ? 'Revoke' : 'Delete';
    const consequence = what === 'revoke'
      ? 'Programs using it stop working at once. The key stays listed as revoked.'
      : 'It disappears from this list; programs using it stop working at once.';
    if (!window.confirm(`${verb} the key “${k.name}” (${k.key_prefix}…)? ${consequence}`)) return;
    tableAlert.clear();
    try {
      if (what === 'revoke') await api(`/api/v1/api-keys/${encodeURIComponent(k.key_id)}/revoke`, { method: 'POST' });
      else await api(`/api/v1/api-keys/${encodeURIComponent(k.key_id)}`, { method: 'DELETE' });
    } catch (err) {
      tableAlert.show(`${verb} failed: ${err.message}`);
    }
    await load();
  }

  /** An editor row under a key's row: its limits, saved with PATCH. */
  function limitsEditor(k, tr) {
    const next = tr.nextElementSibling;
    if (next?.classList.contains('editor')) {
      next.remove();
      return;
    }
    const inputs = limitInputs(k.limits);
    const err = alertBox();
    const save = h('button', { type: 'submit', class: 'primary', text: 'Save limits' });
    const cancel = h('button', { type: 'button', text: 'Cancel' });
    const form = h('form', { class: 'limits-edit', 'aria-label': `Limits of ${k.name}`, novalidate: true },
      h('div', { class: 'grid3' }, inputs.rows), err.el, h('div', { class: 'row' }, save, cancel));
    const editor = h('tr', { class: 'editor' }, h('td', { colspan: 10 }, form));
    cancel.addEventListener('click', () => editor.remove());
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const got = inputs.read();
      if (got.error) {
        err.show(got.error);
        return;
      }
      save.disabled = true;
      try {
        await api(`/api/v1/api-keys/${encodeURIComponent(k.key_id)}`, { method: 'PATCH', body: { limits: got.limits } });
        await load();
      } catch (e2) {
        err.show(`Could not save the limits: ${e2.message}`);
        save.disabled = false;
      }
    });
    tr.after(editor);
    inputs.rows[0].querySelector('input').focus();
  }

  function row(k) {
    const status = statusOf(k);
    const actions = h('td', { class: 'actions' });
    const tr = h('tr', { dataset: { keyId: k.key_id } });
    actions.append(h('button', { type: 'button', text: 'Limits', 'aria-label': `Edit the limits of ${k.name}`, onclick: () => limitsEditor(k, tr) }));
    if (status !== 'revoked') actions.append(h('button', { type: 'button', text: 'Revoke', onclick: () => act(k, 'revoke') }));
    actions.append(h('button', { type: 'button', class: 'quiet', text: 'Delete', onclick: () => act(k, 'delete') }));
    return append(tr,
      [h('th', { scope: 'row', text: k.name }),
      h('td', {}, h('code', { text: `${k.key_prefix}…` })),
      h('td', { text: (k.scopes ?? []).join(', ') }),
      h('td', { text: k.username ?? 'any' }),
      h('td', { text: when(k.created_at) }),
      h('td', { text: k.last_used_at ? when(k.last_used_at) : 'never' }),
      h('td', { text: k.expires_at ? when(k.expires_at) : 'never' }),
      h('td', {}, h('span', { class: `status ${status}`, text: status })),
      h('td', { text: limitsText(k.limits) }),
      actions]);
  }

  async function load() {
    try {
      const keys = await api('/api/v1/api-keys');
      if (!alive) return;
      clear(body);
      if (!keys.length) body.append(h('tr', {}, h('td', { colspan: 10, class: 'empty', text: 'No keys yet.' })));
      for (const k of keys) body.append(row(k));
    } catch (err) {
      if (alive) tableAlert.show(`Could not load the keys: ${err.message}`);
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    alert.clear();
    const req = { name: name.input.value.trim(), scopes: scopes.selected() };
    if (!req.scopes.length) {
      alert.show('Choose at least one scope.');
      return;
    }
    const days = expires.input.value.trim();
    if (days) {
      const n = Number(days);
      if (!Number.isInteger(n) || n < 1) {
        alert.show('Expiry must be a whole number of days, at least 1 (or empty for never).');
        return;
      }
      req.expires_in_days = n;
    }
    if (bound.input.value.trim()) req.username = bound.input.value.trim();
    const limits = limitFields.read();
    if (limits.error) {
      alert.show(limits.error);
      return;
    }
    req.limits = limits.limits;
    create.disabled = true;
    try {
      const k = await api('/api/v1/api-keys', { method: 'POST', body: req });
      form.reset();
      for (const box of form.querySelectorAll('input[type=checkbox]')) {
        box.checked = CHECKED.has(box.value);
        box.dispatchEvent(new Event('change'));
      }
      fresh.show(k.name, k.api_key);
      await load();
    } catch (err) {
      alert.show(`Could not create the key: ${err.message}`);
    } finally {
      create.disabled = false;
    }
  });

  load();
  return { unmount: () => { alive = false; } };
}
