// The console's shell: the login gate, the navigation and a hash router (#/chat, #/voice, #/keys,
// #/usage, #/audit; a page's own state such as the chat's user and session follows `?`), so the
// same files work at `/console/` and behind any prefix, and a reload lands where the user was.
//
// What the page remembers between loads (localStorage) is the name of the signed-in dashboard
// user, to skip a request that would only fail when nobody is signed in; never a key or a token.

import { api, onSignedOut } from './api.js';
import { clear } from './dom.js';
import { mountLogin } from './login.js';
import { mountAudit } from './audit.js';
import { mountChat } from './chat.js';
import { mountKeys } from './keys.js';
import { mountUsage } from './usage.js';
import { mountVoice } from './voice.js';

const PAGES = {
  chat: { title: 'Chat', mount: mountChat },
  voice: { title: 'Voice', mount: mountVoice },
  keys: { title: 'API keys', mount: mountKeys },
  usage: { title: 'Usage', mount: mountUsage },
  audit: { title: 'Audit', mount: mountAudit },
};
const USER_KEY = 'astrgate.console.user';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const logout = document.getElementById('logout');
const who = document.getElementById('who');

let current = null; // {name, page: {unmount?, update?}}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [name, q = ''] = raw.split('?', 2);
  return { name: PAGES[name] ? name : 'chat', params: new URLSearchParams(q) };
}

/** Replaces the page's own state in the address without a navigation. */
function setParams(name, params) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''));
  const s = q.toString();
  history.replaceState(null, '', `#/${name}${s ? `?${s}` : ''}`);
}

function signedInUser() {
  return localStorage.getItem(USER_KEY);
}

function unmount() {
  if (current?.page?.unmount) current.page.unmount();
  current = null;
}

function showLogin() {
  unmount();
  localStorage.removeItem(USER_KEY);
  nav.hidden = true;
  logout.hidden = true;
  who.textContent = '';
  document.title = 'Log in · astrgate';
  clear(main);
  mountLogin(main, (username) => {
    localStorage.setItem(USER_KEY, username);
    route(true);
  });
}

function route(force = false) {
  const user = signedInUser();
  if (!user) {
    showLogin();
    return;
  }
  nav.hidden = false;
  logout.hidden = false;
  who.textContent = user;
  const { name, params } = parseHash();
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === `#/${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!force && current?.name === name && current.page?.update) {
    current.page.update(params);
    return;
  }
  unmount();
  clear(main);
  document.title = `${PAGES[name].title} · astrgate`;
  const ctx = { user, params, setParams: (p) => setParams(name, p) };
  current = { name, page: PAGES[name].mount(main, ctx) ?? {} };
}

onSignedOut(() => {
  if (signedInUser()) showLogin();
});

logout.addEventListener('click', async () => {
  try {
    await api('/api/v1/auth/logout', { method: 'POST', body: {} });
  } catch {
    // Signed out already, or the server is gone: the cookie is cleared either way on its next answer.
  }
  showLogin();
});

window.addEventListener('hashchange', () => route());
// The stored name says someone signed in here; check that the login still holds (it may have
// expired, or been revoked by a logout elsewhere). A 401 brings the login form back.
if (signedInUser()) api('/api/v1/stats/version').catch(() => {});
// A login or logout in another tab.
window.addEventListener('storage', (e) => {
  if (e.key === USER_KEY) route(true);
});
route(true);
