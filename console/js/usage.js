// Usage per key per day, with a chart. The numbers come from governance (issue 15:
// `GET /api/v1/api-keys/{key_id}/usage?days=N`), which this version of astrgate does not have
// yet, so the page says so instead of showing anything made up. When that endpoint exists,
// `renderUsage` below is where its data goes: a key picker, a daily chart and a table.

import { h } from './dom.js';

/** Fills `section` with the usage of one key: not available in this version. */
function renderUsage(section) {
  section.append(
    h('p', { text: 'Usage per key per day arrives with governance (per-key limits, usage accounting and the audit log).' }),
    h('p', { class: 'hint', text: 'This version of astrgate does not count usage yet, so there is nothing to show here: no numbers are made up. Each key’s last use is on the API keys page.' }),
  );
}

export function mountUsage(root) {
  const section = h('section', { class: 'card pending', 'aria-labelledby': 'usage-title', dataset: { governance: 'usage' } },
    h('h2', { id: 'usage-title', text: 'Not available yet' }));
  root.append(h('h1', { text: 'Usage' }), section);
  renderUsage(section);
}
