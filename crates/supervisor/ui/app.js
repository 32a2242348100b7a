// The page's entry point: asks the server whether auth is on, then routes `#/<page>` to the
// page modules. With auth on and no valid token stored, every page leads to the login page;
// an account that must choose a new password gets only the password page until it has.
// `#/sso/<code>` is where the server sends the browser back from a single sign-on provider.

import * as api from './api.js';
import * as session from './session.js';
import { clearNotices, h, notify, parseHash } from './dom.js';
import * as login from './page-login.js';
import * as password from './page-password.js';
import * as models from './page-models.js';
import * as launch from './page-launch.js';
import * as chat from './page-chat.js';
import * as tryout from './page-try.js';
import * as registrations from './page-registrations.js';
import * as cluster from './page-cluster.js';
import * as users from './page-users.js';
import * as keys from './page-keys.js';
import * as audit from './page-audit.js';

const PAGES = { login, password, models, launch, chat, try: tryout, registrations, cluster, users, keys, audit };
const HOME = 'models';

// The pages of the identity store, and who sees their link (the server refuses the others).
const STORE_PAGES = {
  users: () => session.can('users:manage'),
  keys: () => session.can('keys:create') || session.can('keys:manage'),
  audit: () => session.can('admin'),
};

let cleanup = null;
// What the login page says (session expired, logged out) and where to go after it.
let loginMessage = '';
// A failed login that happened elsewhere (a single sign-on's return), shown as the form's error.
let loginError = '';
let afterLogin = HOME;
// The password typed at the login, kept only until the forced password change has used it.
let typedPassword = '';
// A message for the next page shown (switching pages clears the notices).
let flash = '';
// Routing awaits the server (refresh, /v1/auth/me): a newer hash change wins.
let routing = 0;

function go(page) {
  const hash = `#/${page}`;
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  const turn = ++routing;
  const { page: wanted, params } = parseHash(location.hash);
  if (wanted.startsWith('sso/')) {
    await finishSso(wanted.slice('sso/'.length));
    return;
  }
  let page = PAGES[wanted] ? wanted : HOME;
  if (session.authOn()) {
    let state = session.state();
    // An expired access token with a refresh token: renew it before anything is sent.
    if (page !== 'login' && state === 'expired' && session.refreshToken()) {
      if (await api.refreshSession()) state = session.state();
      if (turn !== routing) return;
    }
    if (page !== 'login' && state !== 'valid') {
      if (state === 'expired') {
        session.clear();
        loginMessage = api.SESSION_EXPIRED;
      }
      afterLogin = page;
      go('login');
      return;
    }
    if (page === 'login' && state === 'valid') page = HOME;
    if (state === 'valid' && !session.meKnown()) {
      try {
        session.setMe(await api.me());
      } catch (err) {
        // A 401 has already moved the page to the login; anything else: fall back to the token.
        if (err instanceof api.ApiError && err.status === 401) return;
        session.setMe(null);
        api.report(err);
      }
      if (turn !== routing) return;
    }
    if (page !== 'login' && session.mustChangePassword()) page = 'password';
    if (page === 'password' && !session.storeOn()) page = HOME;
  } else if (page === 'login' || page === 'password') {
    page = HOME;
  }
  if (STORE_PAGES[page] && !session.storeOn()) page = HOME;
  // An unknown or refused page: show where the user really is, without a history entry.
  if (wanted !== page) history.replaceState(null, '', `#/${page}`);
  show(page, params);
}

/** Back from the provider with the server's one-time code: trades it for our tokens (as a
 *  password login stores them), then goes on where the login started; on failure, the login
 *  page says why. */
async function finishSso(rawCode) {
  // The code works once and only briefly, but it must not stay in the address bar or the
  // history: the login page's address replaces it before anything else.
  history.replaceState(null, '', '#/login');
  const pending = session.takeSsoPending();
  const next = PAGES[pending.next] && pending.next !== 'login' && pending.next !== 'password' ? pending.next : HOME;
  if (!session.authOn()) {
    go(HOME);
    return;
  }
  let code = rawCode;
  try {
    code = decodeURIComponent(rawCode);
  } catch {
    // not percent-encoded after all: sent as it came
  }
  updateHeader('login');
  const main = document.getElementById('main');
  main.dataset.page = 'login';
  main.replaceChildren(h('p', { class: 'muted', id: 'sso-pending' }, 'Logging in\u2026'));
  try {
    const res = await api.ssoExchange(code);
    session.clear();
    session.store(res.access_token, res.refresh_token);
    session.setSsoProvider(res.provider || pending.provider || null);
    loginMessage = '';
    typedPassword = '';
    afterLogin = HOME;
    clearNotices();
    go(next);
  } catch (err) {
    // 400 "Invalid or expired login code" (used twice, or too late): log in again.
    loginError = err.message || String(err);
    afterLogin = next;
    go('login');
  }
}

function show(page, params) {
  if (cleanup) cleanup();
  cleanup = null;
  if (page !== 'login') clearNotices();
  if (flash) notify('ok', flash);
  flash = '';
  updateHeader(page);
  const main = document.getElementById('main');
  main.replaceChildren();
  main.dataset.page = page;
  const context = { params, go };
  if (page === 'login') {
    context.message = loginMessage;
    context.error = loginError;
    context.next = afterLogin;
    context.onLoggedIn = (typed) => {
      loginMessage = '';
      typedPassword = typed;
      clearNotices();
      go(afterLogin === 'login' || afterLogin === 'password' ? HOME : afterLogin);
    };
  }
  if (page === 'password') {
    context.forced = session.mustChangePassword();
    context.currentPassword = context.forced ? typedPassword : '';
    context.onChanged = (message) => {
      typedPassword = '';
      flash = message;
      go(context.forced && afterLogin !== 'password' && afterLogin !== 'login' ? afterLogin : HOME);
    };
  } else if (page !== 'login') {
    typedPassword = '';
  }
  loginError = '';
  const result = PAGES[page].render(main, context);
  cleanup = typeof result === 'function' ? result : null;
}

function updateHeader(page) {
  const loggedIn = page !== 'login';
  // Until a forced password change is done, the other pages would all answer 403.
  document.getElementById('nav').hidden = !loggedIn || session.mustChangePassword();
  document.getElementById('who').hidden = !(loggedIn && session.authOn());
  document.getElementById('auth-off').hidden = session.authOn();
  document.getElementById('who-name').replaceChildren(
    h('strong', {}, session.username()),
    h('span', { class: 'muted' }, ` (${session.scopeList().join(', ') || 'no permissions'})`),
  );
  // Config-file users have no id: their password is changed in the file.
  const me = session.me();
  const changePassword = document.getElementById('change-password');
  changePassword.hidden = !(me && me.id !== null && me.id !== undefined) || me.source === 'oidc' || page === 'password';
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.page === page);
    const shown = STORE_PAGES[link.dataset.page];
    if (shown) link.hidden = !(session.storeOn() && shown());
    if (link.dataset.page === 'keys') {
      link.textContent = session.can('keys:manage') ? 'API keys' : 'My keys';
    }
    if (link.dataset.page === 'cluster') {
      const denied = !session.can('admin');
      link.classList.toggle('denied', denied);
      link.title = denied ? 'Requires the admin permission' : '';
      if (denied) link.setAttribute('aria-disabled', 'true');
      else link.removeAttribute('aria-disabled');
    }
  }
}

async function logout() {
  const button = document.getElementById('logout');
  button.disabled = true;
  const provider = session.ssoProvider();
  await api.logout();
  button.disabled = false;
  session.clear();
  if (provider) {
    // Ours has ended; the provider's session would log the next "Log in with" straight back
    // in. The server sends the browser to the provider's logout, which comes back to /ui/.
    location.href = api.ssoLogoutUrl(provider);
    return;
  }
  typedPassword = '';
  loginMessage = 'You are logged out.';
  afterLogin = HOME;
  go('login');
}

async function boot() {
  api.setUnauthorizedHandler(() => {
    loginMessage = api.SESSION_EXPIRED;
    const { page } = parseHash(location.hash);
    afterLogin = PAGES[page] && page !== 'login' ? page : HOME;
    go('login');
  });
  api.setPasswordRequiredHandler(() => {
    // Set since the page was loaded (by an admin): ask the server again, which routes there.
    session.setMe(undefined);
    go('password');
  });
  window.addEventListener('unhandledrejection', (event) => api.report(event.reason));
  document.getElementById('logout').addEventListener('click', logout);
  document.getElementById('nav').addEventListener('click', (event) => {
    if (event.target.closest('a[aria-disabled="true"]')) event.preventDefault();
  });
  let status;
  try {
    status = await api.get('v1/cluster/auth', { anonymous: true });
  } catch (err) {
    const main = document.getElementById('main');
    main.replaceChildren(
      h('div', { class: 'card' },
        h('h1', {}, 'Cannot reach the server'),
        h('p', {}, err.message || String(err)),
        h('button', { type: 'button', onclick: () => location.reload() }, 'Retry')),
    );
    return;
  }
  session.setAuthEnabled(Boolean(status && status.auth));
  window.addEventListener('hashchange', route);
  route();
}

boot();
