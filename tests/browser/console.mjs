// Drives astrgate's own web console (/console/) in Debian's Chromium, as a user would.
//
//   node console.mjs main  <base-url>          log in (a bad password first), create a key and use it
//                                              over HTTP, chat with a streamed markdown reply, reload,
//                                              resume a reply after a reload, stop one, attach a file,
//                                              revoke the key, Usage, the Audit page (its rows and
//                                              paging), log out
//   node console.mjs voice <base-url> <wav>    the Voice page with a fake microphone playing <wav>:
//                                              two utterances (the second interrupts the spoken
//                                              reply), then a typed turn interrupted by the button
//
// Env: CONSOLE_USER, CONSOLE_PASSWORD, CHROMIUM, CONSOLE_SCREENSHOTS (a folder: save a PNG of each
// page there). Every request the page makes is recorded: one that leaves the origin fails the
// run, and so does any console error or uncaught exception (except the 401 of the deliberately
// wrong password). Prints one JSON line with what it saw; exits 1 with the reason on failure.

import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [scenario, base, wav] = process.argv.slice(2);
const user = process.env.CONSOLE_USER ?? 'astrgate';
const password = process.env.CONSOLE_PASSWORD;
const shots = process.env.CONSOLE_SCREENSHOTS;
const origin = new URL(base).origin;
const T = 30000;

const offOrigin = [];
const consoleErrors = [];
const requests = [];
const sockets = [];

const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-default-apps'];
if (scenario === 'voice') {
  args.push('--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}%noloop`, '--autoplay-policy=no-user-gesture-required');
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

async function shot(page, name, opts = {}) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.waitForTimeout(300);
  await page.screenshot({ path: `${shots}/${name}.png`, ...opts });
}

async function login(page, { wrongFirst }) {
  await page.goto(`${base}/`);
  check(new URL(page.url()).pathname === '/console/', `/ did not lead to the console: ${page.url()}`);
  if (wrongFirst) {
    await page.getByLabel('Username').fill(user);
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Log in' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    const text = await alert.textContent();
    check(/wrong username or password/i.test(text), `bad login alert: ${text}`);
    await shot(page, 'login');
  }
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('navigation', { name: 'Console' }).waitFor();
  for (const name of ['Chat', 'Voice', 'API keys', 'Usage', 'Audit']) {
    await page.getByRole('link', { name, exact: true }).waitFor();
  }
}

/** The reply bubbles of the chat log. */
const replies = (page) => page.locator('.log .msg.bot');

async function waitReply(page, index, state) {
  await page.waitForFunction(([i, s]) => document.querySelectorAll('.log .msg.bot')[i]?.dataset.state === s, [index, state], { timeout: T });
}

async function send(page, text) {
  await page.getByLabel('Message').fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
}

async function mainScenario(page, ctx) {
  const summary = {};
  await login(page, { wrongFirst: true });

  // --- API keys: create one, see it once, copy it, use it over HTTP.
  await page.getByRole('link', { name: 'API keys', exact: true }).click();
  await page.getByRole('heading', { name: 'API keys' }).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('browser-key');
  for (const s of ['chat', 'config', 'file', 'im']) await page.getByLabel(s, { exact: true }).waitFor();
  await page.getByLabel('file', { exact: true }).check();
  await page.getByLabel('Expires in (days)').fill('30');
  await page.getByLabel('Requests per minute').fill('100');
  await page.getByRole('button', { name: 'Create key' }).click();
  const keyBox = page.getByLabel('New API key');
  await keyBox.waitFor();
  const key = await keyBox.inputValue();
  check(/^abk_[A-Za-z0-9_-]{43}$/.test(key), `not a key: ${key}`);
  await page.getByRole('button', { name: 'Copy', exact: true }).click();
  await page.getByText('Copied to the clipboard.').waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === key, 'the copy button did not copy the key');
  const row = page.getByRole('row').filter({ hasText: 'browser-key' });
  await row.getByText('active', { exact: true }).waitFor();
  check((await row.textContent()).includes('chat, file'), `row: ${await row.textContent()}`);
  check((await row.textContent()).includes('100/min'), `the limit is not shown: ${await row.textContent()}`);
  await shot(page, 'api-keys', { fullPage: true, mask: [keyBox] });
  const probe = (path) => fetch(`${base}${path}`, { headers: { Authorization: `Bearer ${key}` } });
  check((await probe('/api/v1/chat/sessions?username=probe')).status === 200, 'the new key is refused for chat');
  check((await probe('/api/v1/configs')).status === 403, 'the new key has a scope it was not given');
  await page.getByRole('button', { name: 'Done' }).click();
  check(await keyBox.isHidden(), 'the key is still shown');
  // Limits changed in place (PATCH): the row shows them, the server has them.
  await row.getByRole('button', { name: 'Edit the limits of browser-key' }).click();
  const editor = page.getByRole('form', { name: 'Limits of browser-key' });
  await editor.getByLabel('Concurrent runs').fill('2');
  await editor.getByRole('button', { name: 'Save limits' }).click();
  await row.getByText('100/min, 2 at once').waitFor();
  const listedKeys = await page.evaluate(async () => (await (await fetch('/api/v1/api-keys')).json()).data);
  const mine = listedKeys.find((k) => k.name === 'browser-key');
  check(mine.limits.requests_per_minute === 100 && mine.limits.concurrent_runs === 2 && mine.limits.tokens_per_day === null,
    `limits on the server: ${JSON.stringify(mine.limits)}`);
  summary.key_prefix = key.slice(0, 12);

  // --- Chat as alice: a reply that streams, markdown rendered safely.
  await page.getByRole('link', { name: 'Chat', exact: true }).click();
  await page.getByLabel('Username').fill('alice');
  await page.getByRole('button', { name: 'Show sessions' }).click();
  await page.getByText('No sessions for alice yet.').waitFor();
  await page.evaluate(() => {
    // Records every text the first reply shows while it streams.
    window.__seen = [];
    new MutationObserver(() => {
      const md = document.querySelector('.log .msg.bot .md');
      const t = md?.textContent ?? '';
      if (t && window.__seen.at(-1) !== t) window.__seen.push(t);
    }).observe(document.querySelector('.log'), { subtree: true, childList: true, characterData: true });
  });
  await send(page, 'Show me markdown');
  await waitReply(page, 0, 'done');
  const seen = await page.evaluate(() => window.__seen);
  check(seen.length >= 3, `the reply did not stream (${seen.length} states): ${JSON.stringify(seen)}`);
  summary.stream_states = seen.length;
  const md = replies(page).first().locator('.md');
  check(await md.locator('strong', { hasText: 'bold' }).count() === 1, 'no <strong>');
  check(await md.locator('code', { hasText: 'inline code' }).count() === 1, 'no <code>');
  check(await md.locator('li').count() === 2, 'no list');
  const link = md.locator('a', { hasText: 'the docs' });
  check(await link.getAttribute('href') === 'https://example.com/docs', 'no safe link');
  check((await link.getAttribute('rel')).includes('noopener'), 'link without rel=noopener');
  check(await md.locator('a[href^="javascript"]').count() === 0, 'a javascript: link was made');
  check(await page.locator('.log img').count() === 0, 'an <img> from the reply was made');
  check((await md.textContent()).includes('<img src=x onerror="window.__xss=1">'), 'raw HTML was not shown as text');
  check(await page.evaluate(() => window.__xss === undefined), 'script from the reply ran');
  const url = new URL(page.url());
  const params = new URLSearchParams(url.hash.split('?')[1]);
  check(params.get('user') === 'alice' && params.get('session'), `the address does not name the session: ${url.hash}`);
  summary.session_id = params.get('session');

  // --- Reload: the user, the session and its history come back.
  await page.reload();
  await waitReply(page, 0, 'done');
  check(await page.getByLabel('Username').inputValue() === 'alice', 'the username was lost');
  const listed = page.getByRole('option', { name: 'Show me markdown' });
  await listed.waitFor();
  check(await listed.getAttribute('aria-selected') === 'true', 'the session is not the selected one');
  check(await replies(page).first().locator('strong', { hasText: 'bold' }).count() === 1, 'history lost the markdown');
  await shot(page, 'chat');

  // --- Resume: reload while a reply streams; it picks up and finishes, nothing lost or doubled.
  await send(page, 'Count slowly');
  await page.waitForFunction(() => (document.querySelectorAll('.log .msg.bot')[1]?.textContent ?? '').includes('three'), null, { timeout: T });
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll('.log .msg.bot')[1]?.dataset.state === 'streaming', null, { timeout: T });
  summary.resumed_while_streaming = true;
  // Stop is offered once the page follows the run again.
  await page.waitForFunction(() => [...document.querySelectorAll('button')].some((b) => b.textContent === 'Stop' && !b.disabled), null, { timeout: T });
  await waitReply(page, 1, 'done');
  summary.resumed_text = (await replies(page).nth(1).locator('.md').textContent()).trim();

  // --- Stop: the reply ends as stopped.
  await send(page, 'Think forever');
  await page.waitForFunction(() => (document.querySelectorAll('.log .msg.bot')[2]?.textContent ?? '').includes('Thinking about it'), null, { timeout: T });
  await page.getByRole('button', { name: 'Stop' }).click();
  await waitReply(page, 2, 'stopped');
  await page.reload();
  await waitReply(page, 2, 'stopped');

  // --- An attachment.
  await page.getByLabel('Attach files').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('The secret word is pineapple.\n') });
  await page.locator('.chip[data-status="ready"]').waitFor();
  await send(page, 'What does the file say?');
  await waitReply(page, 3, 'done');
  await page.locator('.log .msg.user a.attachment', { hasText: 'notes.txt' }).waitFor();

  // --- One chat with the key, read to the end (after the scripted replies): a run with tokens for
  // the Usage page.
  const chatted = await fetch(`${base}/api/v1/chat`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ message: 'Hello from the key', username: 'probe' }),
  });
  check(chatted.status === 200 && (await chatted.text()).includes('"type":"end"'), 'the new key cannot chat');

  // --- Revoke the key: confirmed, the row says revoked, the key stops working.
  await page.getByRole('link', { name: 'API keys', exact: true }).click();
  const keyRow = page.getByRole('row').filter({ hasText: 'browser-key' });
  page.once('dialog', (d) => d.accept());
  await keyRow.getByRole('button', { name: 'Revoke' }).click();
  await keyRow.getByText('revoked', { exact: true }).waitFor();
  check(await keyRow.getByRole('button', { name: 'Revoke' }).count() === 0, 'a revoked key still offers Revoke');
  check((await probe('/api/v1/chat/sessions?username=probe')).status === 401, 'the revoked key still works');

  // --- Usage: the key's day, counted (the two requests it was allowed — the probe and the chat;
  // not the scope refusal nor those after the revocation — and the chat's run), with its chart
  // and its table.
  await page.getByRole('link', { name: 'Usage', exact: true }).click();
  await page.getByRole('heading', { name: 'Usage', level: 1 }).waitFor();
  await page.getByLabel('Key', { exact: true }).selectOption({ label: `browser-key (${key.slice(0, 12)}…)` });
  await page.getByRole('heading', { name: `Usage of browser-key (${key.slice(0, 12)}…)` }).waitFor();
  const today = new Date().toISOString().slice(0, 10);
  const todayRow = page.getByRole('row').filter({ hasText: today });
  await todayRow.waitFor();
  const cells = await todayRow.locator('td').allTextContents();
  check(cells[0] === '2' && cells[1] === '1' && Number(cells[2]) > 0 && Number(cells[3]) > 0, `usage today: ${JSON.stringify(cells)}`);
  check(await page.locator('svg.chart rect.bar').count() === 60, 'the chart has no bar per day');
  await page.getByLabel('Days', { exact: true }).selectOption('7');
  await page.waitForFunction(() => document.querySelectorAll('table.usage tbody tr').length === 7, null, { timeout: T });
  summary.usage_rows = 7;
  await shot(page, 'usage');

  // --- Audit: the failed login, the login, the key's creation, its new limits and its revocation,
  // newest first.
  await page.getByRole('link', { name: 'Audit', exact: true }).click();
  await page.getByRole('heading', { name: 'Audit', level: 1 }).waitFor();
  const auditRows = page.locator('table.audit tbody tr[data-action]');
  await auditRows.first().waitFor();
  const audit = await auditRows.evaluateAll((trs) => trs.map((tr) => ({
    id: Number(tr.dataset.id),
    cells: [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()),
  })));
  const actions = audit.map((r) => r.cells[2]);
  check(JSON.stringify(actions) === JSON.stringify(['api_key.revoke', 'api_key.update', 'api_key.create', 'login', 'login_failed']),
    `audit actions: ${JSON.stringify(actions)}`);
  check(audit.every((r) => r.cells[1] === user && r.cells[4] === '127.0.0.1'), `audit rows: ${JSON.stringify(audit)}`);
  check(audit[0].cells[3] === audit[2].cells[3] && audit[1].cells[3] === audit[2].cells[3] && audit[0].cells[3] !== '—',
    'the key events do not name the key');
  check(audit[2].cells[5].includes('name: browser-key') && audit[2].cells[5].includes('scopes: chat, file'),
    `creation details: ${audit[2].cells[5]}`);
  check(!(await page.locator('table.audit').textContent()).includes(password), 'the audit page shows the password');
  summary.audit = audit.map((r) => ({ id: r.id, action: r.cells[2], target: r.cells[3] }));
  await shot(page, 'audit');
  check(await page.getByRole('button', { name: 'Older' }).isDisabled(), 'Older is offered on a page that holds every event');
  // Two events a page (`limit` in the page's address): Older walks back, a reload stays, Newest returns.
  await page.evaluate(() => { location.hash = '#/audit?limit=2'; });
  const shown = async () => (await auditRows.evaluateAll((trs) => trs.map((tr) => tr.dataset.action))).join(',');
  await page.waitForFunction(() => document.querySelectorAll('table.audit tbody tr[data-action]').length === 2);
  check(await shown() === 'api_key.revoke,api_key.update', `first page: ${await shown()}`);
  check(await page.getByRole('button', { name: 'Newest' }).isDisabled(), 'Newest is offered on the newest page');
  await page.getByRole('button', { name: 'Older' }).click();
  await page.waitForFunction(() => document.querySelector('table.audit tbody tr[data-action]')?.dataset.action === 'api_key.create');
  check(await shown() === 'api_key.create,login', `older page: ${await shown()}`);
  await page.getByRole('button', { name: 'Older' }).click();
  await page.waitForFunction(() => document.querySelector('table.audit tbody tr[data-action]')?.dataset.action === 'login_failed');
  check(await shown() === 'login_failed', `oldest page: ${await shown()}`);
  check(await page.getByRole('button', { name: 'Older' }).isDisabled(), 'Older is offered on the oldest page');
  check(new URLSearchParams(new URL(page.url()).hash.split('?')[1]).get('before') === String(audit[3].id),
    `the address does not hold the page: ${page.url()}`);
  await page.reload();
  await page.waitForFunction(() => document.querySelector('table.audit tbody tr[data-action]')?.dataset.action === 'login_failed');
  await page.getByRole('button', { name: 'Newest' }).click();
  await page.waitForFunction(() => document.querySelector('table.audit tbody tr[data-action]')?.dataset.action === 'api_key.revoke');

  // --- The cookie is HttpOnly and Strict; nothing secret is stored in the page.
  const cookie = (await ctx.cookies()).find((c) => c.name === 'astrbot_dashboard_jwt');
  check(cookie?.httpOnly && cookie.sameSite === 'Strict', `cookie: ${JSON.stringify(cookie)}`);
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  check(!/abk_|eyJ/.test(stored), `a key or a token is stored in the page: ${stored}`);

  // --- Log out.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
  const after = (await ctx.cookies()).find((c) => c.name === 'astrbot_dashboard_jwt');
  check(!after || !after.value, 'the cookie survived the logout');
  return summary;
}

async function voiceScenario(page) {
  const summary = { sent: [], received: [] };
  page.on('websocket', (ws) => {
    sockets.push(ws.url());
    ws.on('framesent', (f) => {
      const m = JSON.parse(String(f.payload));
      summary.sent.push(m.t === 'speaking_part' ? { t: m.t, bytes: Buffer.from(m.data, 'base64').length } : m);
    });
    ws.on('framereceived', (f) => {
      const m = JSON.parse(String(f.payload));
      summary.received.push(m.t === 'response' ? { t: m.t, bytes: m.data.length } : m);
    });
  });
  await login(page, { wrongFirst: false });
  await page.getByRole('link', { name: 'Voice', exact: true }).click();
  await page.getByRole('button', { name: 'Start microphone' }).click();
  await page.getByRole('button', { name: 'Stop microphone' }).waitFor();

  // Two utterances: the first reply is interrupted by the second, whose reply plays to the end.
  await page.waitForFunction(() => {
    const turns = [...document.querySelectorAll('.transcript .turn')];
    const users = turns.filter((t) => t.classList.contains('user'));
    const bots = turns.filter((t) => t.classList.contains('bot'));
    const interrupted = bots.some((b) => b.dataset.state === 'interrupted');
    const played = bots.some((b) => b.dataset.state === 'done' && b.querySelector('.sentence[data-played="true"]'));
    return users.length >= 2 && interrupted && played;
  }, null, { timeout: 120000 });
  await shot(page, 'voice', { fullPage: true });
  summary.played = await page.locator('.sentence[data-played="true"]').count();

  // The button interrupts a typed turn's spoken reply.
  await page.getByRole('button', { name: 'Stop microphone' }).click();
  await page.getByLabel('Type instead').fill('Tell me a long story');
  await page.getByRole('button', { name: 'Say it' }).click();
  await page.waitForFunction(() => {
    const bots = [...document.querySelectorAll('.transcript .turn.bot')];
    return bots.length >= 3 && bots.at(-1).querySelector('.sentence[data-played="playing"], .sentence[data-played="true"]');
  }, null, { timeout: 60000 });
  const interrupt = page.getByRole('button', { name: 'Interrupt', exact: true });
  check(await interrupt.isEnabled(), 'Interrupt is not offered while the reply plays');
  await interrupt.click();
  await page.waitForFunction(() => [...document.querySelectorAll('.transcript .turn.bot')].at(-1).dataset.state === 'interrupted', null, { timeout: T });
  check(await page.locator('.sentence[data-played="playing"]').count() === 0, 'a sentence still plays after the interruptions');
  // The page stops playing at once; the server's `stop_play` answer to each interrupt may still be
  // on its way: wait for both before the frames are summed up.
  const deadline = Date.now() + T;
  while (summary.received.filter((m) => m.t === 'stop_play').length < 2 && Date.now() < deadline) {
    await page.waitForTimeout(50);
  }
  summary.cut = await page.locator('.sentence[data-played="cut"]').count();
  summary.turns = await page.locator('.transcript .turn').count();
  summary.heard = await page.locator('.transcript .turn.user .text').allTextContents();
  return summary;
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args });
let exit = 0;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' });
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  const page = await ctx.newPage();
  page.setDefaultTimeout(T);
  page.on('request', (r) => {
    requests.push(`${r.method()} ${r.url()}`);
    if (new URL(r.url()).origin !== origin) offOrigin.push(r.url());
  });
  page.on('websocket', (ws) => {
    const u = new URL(ws.url());
    if (u.host !== new URL(base).host) offOrigin.push(ws.url());
  });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const expected = m.text().includes('401') && m.location().url === `${origin}/api/v1/auth/login`;
    if (!expected) consoleErrors.push(`${m.text()} @ ${m.location().url}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`uncaught: ${e.message}`));
  const summary = scenario === 'voice' ? await voiceScenario(page) : await mainScenario(page, ctx);
  check(consoleErrors.length === 0, `console errors: ${consoleErrors.join(' | ')}`);
  check(offOrigin.length === 0, `requests left the origin: ${offOrigin.join(', ')}`);
  check(requests.length > 10, `only ${requests.length} requests recorded`);
  console.log(JSON.stringify({ ok: true, scenario, requests: requests.length, sockets, ...summary }));
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  if (consoleErrors.length) console.error(`console errors: ${consoleErrors.join(' | ')}`);
  if (offOrigin.length) console.error(`off-origin requests: ${offOrigin.join(', ')}`);
  exit = 1;
} finally {
  await browser.close();
}
process.exit(exit);
