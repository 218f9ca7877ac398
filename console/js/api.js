// The console's one way to call astrgate: same-origin fetches carried by the HttpOnly dashboard
// cookie (the page never sees a login token), JSON bodies (the server refuses cookie-carried
// writes that are not same-origin JSON or an upload), AstrBot's envelope unwrapped.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const listeners = new Set();

/** Called with no arguments when the server answers 401: the login has expired or was revoked. */
export function onSignedOut(fn) {
  listeners.add(fn);
}

function signedOut() {
  for (const fn of listeners) fn();
}

function init(method, body, signal) {
  const req = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, signal };
  if (body instanceof FormData) {
    req.body = body;
  } else if (body !== undefined) {
    req.headers['Content-Type'] = 'application/json';
    req.body = JSON.stringify(body);
  }
  return req;
}

async function failure(res) {
  let message = `HTTP ${res.status}`;
  try {
    const json = await res.json();
    if (json && typeof json.message === 'string' && json.message) message = json.message;
  } catch {
    // Not JSON: keep the status.
  }
  if (res.status === 401) signedOut();
  return new ApiError(res.status, message);
}

/** Calls `path` and returns the envelope's `data`; throws ApiError on any failure. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const res = await fetch(path, init(method, body, signal));
  if (!res.ok) throw await failure(res);
  const json = await res.json();
  if (json?.status !== 'ok') throw new ApiError(res.status, json?.message ?? 'Unexpected answer');
  return json.data;
}

/** Calls `path` and returns the Response itself (for streams); throws ApiError on a failure. */
export async function stream(path, { method = 'GET', body, signal, headers = {} } = {}) {
  const req = init(method, body, signal);
  req.headers = { ...req.headers, Accept: 'text/event-stream', ...headers };
  const res = await fetch(path, req);
  if (!res.ok) throw await failure(res);
  return res;
}

/** A query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}
