// The login session of this tab: the access token and the refresh token live in sessionStorage
// (gone when the tab closes, not shared with other tabs or sites' scripts thanks to the CSP).
// Who the user is and what they may do come from `GET /v1/auth/me` when the server has an
// identity store (kept in memory, read again on each page load), else from the token's `scopes`
// claim. The server checks every call again; these only decide what the page shows and enables.

const KEY = 'xinference.token';
const REFRESH_KEY = 'xinference.refresh';
// The single sign-on provider of this login: logging out also ends the provider's session.
const SSO_KEY = 'xinference.sso_provider';
// Across the trip to the identity provider (the page is left): which provider, and where to go.
const SSO_PENDING_KEY = 'xinference.sso_pending';

let authEnabled = true;
// `GET /v1/auth/me`'s answer; `undefined`: not asked yet this session, `null`: no identity store.
let account;

export function setAuthEnabled(enabled) {
  authEnabled = enabled;
}

export function authOn() {
  return authEnabled;
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function refreshToken() {
  return sessionStorage.getItem(REFRESH_KEY);
}

/** Keeps a login's or a refresh's tokens; a server without the store sends no refresh token. */
export function store(accessToken, newRefreshToken) {
  sessionStorage.setItem(KEY, accessToken);
  if (newRefreshToken) sessionStorage.setItem(REFRESH_KEY, newRefreshToken);
  else sessionStorage.removeItem(REFRESH_KEY);
}

export function clear() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(REFRESH_KEY);
  sessionStorage.removeItem(SSO_KEY);
  account = undefined;
}

/** Records which provider this login came through (null: a password login). */
export function setSsoProvider(name) {
  if (name) sessionStorage.setItem(SSO_KEY, name);
  else sessionStorage.removeItem(SSO_KEY);
}

/** The provider of this login, or null when it was a password login. */
export function ssoProvider() {
  return sessionStorage.getItem(SSO_KEY);
}

/** Before leaving for the provider: remembers it and the page to show after the login. */
export function startSso(provider, next) {
  sessionStorage.setItem(SSO_PENDING_KEY, JSON.stringify({ provider, next }));
}

/** What `startSso` remembered (once), or an empty object: the trip may have begun elsewhere. */
export function takeSsoPending() {
  const raw = sessionStorage.getItem(SSO_PENDING_KEY);
  sessionStorage.removeItem(SSO_PENDING_KEY);
  try {
    const pending = JSON.parse(raw || '{}');
    return pending && typeof pending === 'object' ? pending : {};
  } catch {
    return {};
  }
}

/** Records `GET /v1/auth/me` (null: the server has no identity store). */
export function setMe(me) {
  account = me;
}

/** Whether `GET /v1/auth/me` has been asked since the login (or the page load). */
export function meKnown() {
  return account !== undefined;
}

export function me() {
  return account || null;
}

/** Whether the server keeps users, keys and sessions (the admin pages exist). */
export function storeOn() {
  return authEnabled && Boolean(account);
}

export function mustChangePassword() {
  return Boolean(account && account.must_change_password);
}

/** The token's claims, or null when there is none or it is not a JWT. */
export function claims() {
  const raw = token();
  if (!raw) return null;
  const parts = raw.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const utf8 = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(utf8));
    return payload && typeof payload === 'object' ? payload : null;
  } catch {
    return null;
  }
}

/** 'none' (log in), 'expired' (refresh or log in again) or 'valid' (as far as the page can tell). */
export function state() {
  const c = claims();
  if (!c) return 'none';
  if (typeof c.exp === 'number' && c.exp <= Date.now() / 1000) return 'expired';
  return 'valid';
}

export function username() {
  if (account && typeof account.username === 'string') return account.username;
  const c = claims();
  return c && typeof c.sub === 'string' ? c.sub : '';
}

function scopes() {
  if (account && Array.isArray(account.permissions)) return account.permissions.filter((s) => typeof s === 'string');
  const c = claims();
  return c && Array.isArray(c.scopes) ? c.scopes.filter((s) => typeof s === 'string') : [];
}

/** Whether the user holds `permission`: always with auth off; `admin` implies every one. */
export function can(permission) {
  if (!authEnabled) return true;
  const held = scopes();
  if (held.includes('admin') || held.includes(permission)) return true;
  // Upstream's alias, should a token carry it unexpanded.
  return held.includes('models:write') && (permission === 'models:start' || permission === 'models:stop');
}

export function scopeList() {
  return scopes();
}
