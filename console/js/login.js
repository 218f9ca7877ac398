// The login form. A successful login sets the HttpOnly dashboard cookie; the token in the answer's
// body is deliberately not kept: the console's requests are carried by the cookie alone.

import { ApiError } from './api.js';
import { alertBox, field, h } from './dom.js';

function explain(err) {
  if (err instanceof ApiError) {
    if (err.status === 401) return 'Wrong username or password.';
    if (err.status === 429) return 'Too many login attempts. Wait a little and try again.';
    return `Login failed: ${err.message}`;
  }
  return `Login failed: ${err.message}`;
}

/** Shows the form in `root`; calls `done(username)` after a successful login. */
export function mountLogin(root, done) {
  const user = field('Username', { name: 'username', autocomplete: 'username', required: true });
  const pass = field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const alert = alertBox();
  const button = h('button', { type: 'submit', class: 'primary', text: 'Log in' });
  const form = h('form', { class: 'card login', 'aria-labelledby': 'login-title', novalidate: true },
    h('h1', { id: 'login-title', text: 'Log in to astrgate' }),
    user.row, pass.row, alert.el, button);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    alert.clear();
    const username = user.input.value.trim();
    if (!username || !pass.input.value) {
      alert.show('Enter the username and the password.');
      return;
    }
    button.disabled = true;
    try {
      // Not through api(): a 401 here is a wrong password, not an expired session.
      const res = await fetch('/api/v1/auth/login', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ username, password: pass.input.value }),
      });
      const json = await res.json().catch(() => null);
      if (!res.ok || json?.status !== 'ok') throw new ApiError(res.status, json?.message ?? `HTTP ${res.status}`);
      pass.input.value = '';
      done(json.data.username ?? username);
    } catch (err) {
      alert.show(explain(err));
      pass.input.select();
    } finally {
      button.disabled = false;
    }
  });
  root.append(form);
  user.input.focus();
}
