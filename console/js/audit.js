// The audit log: logins, failed logins, key changes. It comes from governance (issue 15:
// `GET /api/v1/audit?limit=&before=`), which this version of astrgate does not have yet, so the
// page says so instead of showing anything made up. When that endpoint exists, `renderAudit`
// below is where its events go: a table of time, actor, action, target and address, paged by
// `before`.

import { h } from './dom.js';

/** Fills `section` with the audit log: not available in this version. */
function renderAudit(section) {
  section.append(
    h('p', { text: 'The audit log (logins, failed logins, key creation, revocation and deletion) arrives with governance.' }),
    h('p', { class: 'hint', text: 'This version of astrgate does not record an audit log yet, so there is nothing to show here. Meanwhile failed logins and key changes are written to the server’s own log.' }),
  );
}

export function mountAudit(root) {
  const section = h('section', { class: 'card pending', 'aria-labelledby': 'audit-title', dataset: { governance: 'audit' } },
    h('h2', { id: 'audit-title', text: 'Not available yet' }));
  root.append(h('h1', { text: 'Audit' }), section);
  renderAudit(section);
}
