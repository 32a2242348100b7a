// Every call to the REST API goes through `request`: it adds the bearer token, turns error
// answers into ApiError with the server's `detail`, renews the session once on a 401 (with the
// refresh token, when the server gave one) and otherwise sends the user back to the login page,
// and words a 403 for a missing permission as "Not enough permissions for <action>".

import * as session from './session.js';
import { notify } from './dom.js';

// The page lives at <root>/ui/; the API at <root>/, so a proxy may mount both under a prefix.
const ROOT = new URL('../', document.baseURI);

export const SESSION_EXPIRED = 'Your session expired, please log in.';
// The server's 403 for an account that must choose a new password first.
const MUST_CHANGE = 'Password change required';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

let onUnauthorized = () => {};
let onPasswordRequired = () => {};

/** Called (once per 401) after the stored token has been dropped. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** Called on a 403 saying the account must change its password first. */
export function setPasswordRequiredHandler(handler) {
  onPasswordRequired = handler;
}

async function detailOf(res) {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && typeof body.detail === 'string') return body.detail;
    if (body && body.detail !== undefined) return JSON.stringify(body.detail);
  } catch {
    // not JSON: fall through
  }
  return text.trim() || `${res.status} ${res.statusText}`;
}

/**
 * Calls `path` (relative to the server root, e.g. 'v1/models'). Options: `body` (sent as JSON),
 * `action` (words for a 403 message), `signal`, `anonymous` (no token; a 401 is just an error),
 * `cookies` (send this origin's cookies: only the single sign-on exchange, whose one-time code
 * is bound to the browser by one; every other call carries its token and no ambient cookie).
 * Resolves to the Response when it is 2xx, else throws ApiError.
 */
export async function request(method, path, { body, action = path, signal, anonymous = false, cookies = false } = {}) {
  let sent = null;
  const call = () => {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    sent = session.token();
    if (!anonymous && session.authOn() && sent) headers.Authorization = `Bearer ${sent}`;
    return fetch(new URL(path, ROOT), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: cookies ? 'same-origin' : 'omit',
    });
  };
  let res = await call();
  const guarded = !anonymous && session.authOn();
  // A refused access token: renew it once and send the request again.
  if (res.status === 401 && guarded && (await refreshSession(sent))) res = await call();
  if (res.ok) return res;
  const detail = await detailOf(res);
  if (res.status === 401 && guarded) {
    session.clear();
    onUnauthorized();
    throw new ApiError(401, SESSION_EXPIRED);
  }
  if (res.status === 403) {
    // The server names the missing permission: `WWW-Authenticate: Bearer scope="models:start"`.
    const scope = /scope="([^"]+)"/.exec(res.headers.get('WWW-Authenticate') || '');
    if (scope) throw new ApiError(403, `Not enough permissions for ${action} (requires ${scope[1]}).`);
    // Otherwise a rule of the server ("Cannot grant permissions you do not hold: admin").
    if (guarded && detail.startsWith(MUST_CHANGE)) onPasswordRequired();
    throw new ApiError(403, detail);
  }
  throw new ApiError(res.status, detail);
}

let refreshing = null;

/**
 * `POST /v1/auth/refresh` with the stored refresh token: stores the new pair and resolves to
 * true, or to false when there is none or the server refuses it. Calls that fail together share
 * one refresh (a refresh token works once: presenting it twice would end the session).
 * `usedToken`: the access token the server refused; if another call has replaced it meanwhile,
 * the caller just retries with the new one.
 */
export function refreshSession(usedToken) {
  if (refreshing) return refreshing;
  if (usedToken && session.token() && usedToken !== session.token()) return Promise.resolve(true);
  const refreshToken = session.refreshToken();
  if (!refreshToken) return Promise.resolve(false);
  refreshing = (async () => {
    try {
      const res = await post('v1/auth/refresh', { refresh_token: refreshToken }, { anonymous: true });
      session.store(res.access_token, res.refresh_token);
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** `request`, then the JSON body. */
export async function json(method, path, options) {
  const res = await request(method, path, options);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export function get(path, options) {
  return json('GET', path, options);
}

export function post(path, body, options = {}) {
  return json('POST', path, { ...options, body });
}

export function put(path, body, options = {}) {
  return json('PUT', path, { ...options, body });
}

export function del(path, options) {
  return json('DELETE', path, options);
}

/** `POST /token` with the JSON body the SDK sends. */
export function login(username, password) {
  return post('token', { username, password }, { anonymous: true, action: 'logging in' });
}

/** `GET /v1/auth/sso/providers`: `[{name, display_name}]`; none when the call fails (an older
 *  server, SSO off): the login page then just has no provider buttons. */
export async function ssoProviders() {
  try {
    const res = await get('v1/auth/sso/providers', { anonymous: true });
    return res && Array.isArray(res.providers) ? res.providers.filter((p) => p && typeof p.name === 'string') : [];
  } catch {
    return [];
  }
}

/** `POST /v1/auth/sso/exchange`: the one-time code the server put in `#/sso/<code>` for tokens. */
export function ssoExchange(code) {
  return post('v1/auth/sso/exchange', { code }, { anonymous: true, action: 'logging in', cookies: true });
}

/** Where the browser goes (a top-level navigation, not fetch: the provider's pages follow) to
 *  log in through `provider`, or to end its session after ours. Under ROOT like the API. */
export function ssoAuthorizeUrl(provider) {
  return new URL(`api/oidc/authorize?provider=${encodeURIComponent(provider)}`, ROOT).href;
}

export function ssoLogoutUrl(provider) {
  return new URL(`api/oidc/logout?provider=${encodeURIComponent(provider)}`, ROOT).href;
}

/** Ends the session on the server (best effort: the tab forgets it either way). */
export async function logout() {
  const refreshToken = session.refreshToken();
  if (!refreshToken) return;
  try {
    await post('v1/auth/logout', { refresh_token: refreshToken }, { anonymous: true });
  } catch {
    // The session is gone already, or the server is away: nothing left to end from here.
  }
}

/** `GET /v1/auth/me`, or null when the server has no identity store (404). */
export async function me() {
  try {
    return await get('v1/auth/me', { action: 'reading your account' });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

/**
 * Streams a chat completion: yields each `chat.completion.chunk`. Uses fetch and a stream
 * reader (EventSource cannot send the Authorization header). An `{"error": ...}` event, sent
 * when a generation fails after the 200 status line, becomes an ApiError.
 */
export async function* chatStream(body, signal) {
  const res = await request('POST', 'v1/chat/completions', {
    body: { ...body, stream: true },
    action: 'chatting with a model',
    signal,
  });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split('\n')
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, ''))
          .join('\n');
        if (!data) continue;
        if (data === '[DONE]') return;
        const message = JSON.parse(data);
        if (message.error !== undefined) {
          const err = message.error;
          throw new ApiError(500, typeof err === 'string' ? err : err.message || JSON.stringify(err));
        }
        yield message;
      }
    }
  } finally {
    // Closes the connection when we stop early (error event, [DONE], Stop button).
    reader.cancel().catch(() => {});
  }
}

/** Shows an error to the user, unless it needs no words (a cancelled request, a 401 that has
 *  already moved the user to the login page). */
export function report(err) {
  if (!err || err.name === 'AbortError') return;
  if (err instanceof ApiError && err.status === 401 && session.authOn()) return;
  notify('error', err.message || String(err));
}
