// Drives AstrBot 4.29.3's own WebUI (served by astrgate from `[dashboard] webui_dir`) in Debian's
// Chromium, as a user would: log in, create an API key on Settings → OpenAPI with the default
// scopes and see it listed, send a ChatUI message and see the streamed reply, reload and see the
// history. Every API answer is recorded: a 4xx/5xx from an endpoint astrgate implements (a path
// and method in openapi.json) fails the run, and so does a Content-Security-Policy violation.
//
// Usage: node webui.mjs <base-url> <openapi.json>   (env: WEBUI_USER, WEBUI_PASSWORD, CHROMIUM)
// Prints one JSON line with what it did; exits 1 with the reason on failure.

import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [base, specPath] = process.argv.slice(2);
const user = process.env.WEBUI_USER ?? 'astrgate';
const password = process.env.WEBUI_PASSWORD;
const QUESTION = 'hello from chromium';
const REPLY = `Echo: ${QUESTION}`;
const KEY_NAME = 'browser-key';

// The implemented endpoints: openapi.json's paths as patterns, with their methods.
const spec = JSON.parse(readFileSync(specPath, 'utf8'));
const implemented = Object.entries(spec.paths).map(([p, item]) => ({
  re: new RegExp('^' + p.replace(/\{[^}]+\}/g, '[^/]+') + '$'),
  methods: new Set(Object.keys(item).map((m) => m.toUpperCase())),
}));
const isImplemented = (method, path) => implemented.some((e) => e.re.test(path) && e.methods.has(method));

const failures = [];
const unimplemented = new Set();
const cspViolations = [];
let chatStream = null;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-default-apps'],
});
try {
  const ctx = await browser.newContext();
  // English UI, as a user would pick it.
  await ctx.addInitScript(() => {
    if (!localStorage.getItem('astrbot-locale')) localStorage.setItem('astrbot-locale', 'en-US');
  });
  const page = await ctx.newPage();
  page.setDefaultTimeout(20000);
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  page.on('response', async (r) => {
    const url = new URL(r.url());
    if (!url.pathname.startsWith('/api/')) return;
    const method = r.request().method();
    if (r.status() >= 400) {
      if (isImplemented(method, url.pathname)) failures.push(`${r.status()} ${method} ${url.pathname}${url.search}`);
      else unimplemented.add(`${r.status()} ${method} ${url.pathname}`);
    }
    if (method === 'POST' && url.pathname === '/api/v1/chat') {
      chatStream = { status: r.status(), type: r.headers()['content-type'], body: await r.text().catch((e) => `! ${e}`) };
    }
  });

  // 1. Log in.
  await page.goto(`${base}/#/auth/login`);
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForURL((u) => !u.hash.startsWith('#/auth/login'));
  const token = await page.evaluate(() => localStorage.getItem('token'));
  if (!token) throw new Error('no token stored after login');

  // 2. Settings → OpenAPI: create a key with the page's default scopes; it is shown once and listed.
  await page.goto(`${base}/#/settings`);
  await page.getByRole('button', { name: 'OpenAPI' }).click();
  await page.getByLabel('Key Name').fill(KEY_NAME);
  await page.getByRole('button', { name: 'Create API Key' }).click();
  await page.getByRole('button', { name: 'Confirm' }).click();
  await page.waitForFunction(() => /abk_[A-Za-z0-9_-]{43}/.test(document.body.innerText));
  const rawKey = (await page.evaluate(() => document.body.innerText.match(/abk_[A-Za-z0-9_-]{43}/)[0]));
  await page.getByText(KEY_NAME, { exact: true }).first().waitFor();
  // The new key works against the Open API (scope `provider` is among the defaults).
  const providers = await fetch(`${base}/api/v1/providers?capability=chat`, { headers: { 'X-API-Key': rawKey } });
  if (providers.status !== 200) throw new Error(`the created key is refused: ${providers.status}`);

  // 3. ChatUI: send a message and see the streamed reply.
  await page.getByText('Chat', { exact: true }).first().click();
  await page.waitForURL((u) => u.hash.startsWith('#/chat'));
  await page.fill('textarea.chat-textarea', QUESTION);
  await page.click('button.send-btn');
  await page.getByText(REPLY).first().waitFor();
  await page.waitForURL((u) => /^#\/chat\/[^/]+$/.test(u.hash));
  const sessionId = new URL(page.url()).hash.split('/').pop();
  for (let i = 0; i < 100 && !chatStream; i++) await page.waitForTimeout(100);
  if (!chatStream) throw new Error('the chat request was not seen');
  if (chatStream.status !== 200 || !chatStream.type?.startsWith('text/event-stream')) {
    throw new Error(`chat answered ${chatStream.status} ${chatStream.type}`);
  }
  const events = chatStream.body.split('\n\n')
    .map((block) => block.split('\n').find((l) => l.startsWith('data: ')))
    .filter(Boolean)
    .map((l) => JSON.parse(l.slice(6)));
  const plains = events.filter((e) => e.type === 'plain' && e.streaming === true).length;
  if (plains < 2) throw new Error(`the reply was not streamed (${plains} plain events): ${chatStream.body.slice(0, 500)}`);
  if (events.at(-1)?.type !== 'end') throw new Error(`the stream did not end with "end": ${events.at(-1)?.type}`);

  // 4. Reload: the history comes back from the server.
  await page.reload();
  await page.getByText(REPLY).first().waitFor();
  await page.getByText(QUESTION, { exact: true }).first().waitFor();

  if (cspViolations.length) throw new Error(`CSP violations: ${cspViolations.join(' | ')}`);
  if (failures.length) throw new Error(`implemented endpoints failed: ${failures.join(', ')}`);
  console.log(JSON.stringify({
    ok: true, key_prefix: rawKey.slice(0, 12), session_id: sessionId, plain_events: plains,
    unimplemented: [...unimplemented].sort(),
  }));
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  if (failures.length) console.error(`failed endpoints: ${failures.join(', ')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
