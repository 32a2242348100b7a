// The login session of this tab: the token lives in sessionStorage (gone when the tab closes,
// not shared with other sites' scripts thanks to the CSP), and the permissions are read from the
// token's `scopes` claim. The server checks every call again; these only decide what the page
// enables.

const KEY = 'xinference.token';

let authEnabled = true;

export function setAuthEnabled(enabled) {
  authEnabled = enabled;
}

export function authOn() {
  return authEnabled;
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function store(accessToken) {
  sessionStorage.setItem(KEY, accessToken);
}

export function clear() {
  sessionStorage.removeItem(KEY);
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

/** 'none' (log in), 'expired' (log in again) or 'valid' (as far as the page can tell). */
export function state() {
  const c = claims();
  if (!c) return 'none';
  if (typeof c.exp === 'number' && c.exp <= Date.now() / 1000) return 'expired';
  return 'valid';
}

export function username() {
  const c = claims();
  return c && typeof c.sub === 'string' ? c.sub : '';
}

function scopes() {
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
