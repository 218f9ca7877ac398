// The audit log: logins, failed logins and API-key changes, newest first, from the dashboard-only
// `GET /api/v1/audit?limit=&before=`. A table of time, actor, action, target, address and details,
// paged back with **Older** (the answer's `next_before`) and back to the top with **Newest**. The
// page's position is kept in the address (`#/audit?before=…`, and `limit=` for another page size
// than 50), so a reload stays on it.

import { api, query } from './api.js';
import { alertBox, clear, h, when } from './dom.js';

const PAGE = 50;

/** A positive integer from the address, or `fallback`. */
function positive(value, fallback, max = Number.MAX_SAFE_INTEGER) {
  const n = Number(value);
  return Number.isInteger(n) && n > 0 && n <= max ? n : fallback;
}

/** A short text for an event's `detail` (a new key's name, scopes and user; a lost-events count). */
function detailText(detail) {
  if (!detail || typeof detail !== 'object') return '';
  const parts = [];
  if (detail.name != null) parts.push(`name: ${detail.name}`);
  if (Array.isArray(detail.scopes)) parts.push(`scopes: ${detail.scopes.join(', ')}`);
  if (detail.username != null) parts.push(`user: ${detail.username}`);
  if (detail.count != null) parts.push(`${detail.count} events not recorded`);
  return parts.join('; ');
}

function row(e) {
  return h('tr', { dataset: { id: String(e.id), action: e.action } },
    h('td', {}, h('time', { datetime: e.time, text: when(e.time) })),
    h('td', { text: e.actor }),
    h('td', {}, h('code', { class: `action ${e.action.replace(/[^a-z_]/g, '-')}`, text: e.action })),
    h('td', {}, e.target ? h('code', { text: e.target }) : '—'),
    h('td', { text: e.ip ?? '—' }),
    h('td', { class: 'hint', text: detailText(e.detail) }));
}

/** Fills `section` with the audit log, one page at a time. */
function renderAudit(section, { params, setParams }) {
  let alive = true;
  let before = null;
  let next = null;
  let limit = PAGE;
  const alert = alertBox();
  const body = h('tbody');
  const status = h('p', { class: 'hint', role: 'status' });
  const newest = h('button', { type: 'button', text: 'Newest' });
  const older = h('button', { type: 'button', text: 'Older' });
  const table = h('table', { class: 'audit' },
    h('caption', { class: 'visually-hidden', text: 'Logins, failed logins and API-key changes, newest first' }),
    h('thead', {}, h('tr', {}, ...['Time', 'Actor', 'Action', 'Target', 'Address', 'Details']
      .map((t) => h('th', { scope: 'col', text: t })))),
    body);
  section.append(alert.el, h('div', { class: 'scroll' }, table), h('div', { class: 'row pager' }, newest, older, status));

  async function load(from) {
    alert.clear();
    newest.disabled = true;
    older.disabled = true;
    try {
      const data = await api(`/api/v1/audit${query({ limit, before: from })}`);
      if (!alive) return;
      before = from;
      next = data.next_before ?? null;
      setParams({ limit: limit === PAGE ? null : limit, before: from });
      clear(body);
      if (!data.events.length) {
        body.append(h('tr', {}, h('td', { colspan: 6, class: 'empty', text: from ? 'No older events.' : 'No events yet.' })));
      }
      for (const e of data.events) body.append(row(e));
      status.textContent = data.events.length
        ? `${data.events.length} event${data.events.length === 1 ? '' : 's'}${from ? ' (older page)' : ''}`
        : '';
    } catch (err) {
      if (alive) alert.show(`Could not load the audit log: ${err.message}`);
    } finally {
      newest.disabled = before === null;
      older.disabled = next === null;
    }
  }

  const start = (p) => {
    limit = positive(p.get('limit'), PAGE, 500);
    load(positive(p.get('before'), null));
  };
  newest.addEventListener('click', () => load(null));
  older.addEventListener('click', () => { if (next !== null) load(next); });
  start(params);
  return { unmount: () => { alive = false; }, update: start };
}

export function mountAudit(root, ctx) {
  const section = h('section', { class: 'card', 'aria-labelledby': 'audit-title' },
    h('h2', { id: 'audit-title', text: 'Audit log' }));
  root.append(h('h1', { text: 'Audit' }), section);
  return renderAudit(section, ctx);
}
