// The page's entry point: asks the server whether auth is on, then routes `#/<page>` to the
// page modules. With auth on and no valid token stored, every page leads to the login page.

import * as api from './api.js';
import * as session from './session.js';
import { clearNotices, h, parseHash } from './dom.js';
import * as login from './page-login.js';
import * as models from './page-models.js';
import * as launch from './page-launch.js';
import * as chat from './page-chat.js';
import * as tryout from './page-try.js';
import * as registrations from './page-registrations.js';
import * as cluster from './page-cluster.js';

const PAGES = { login, models, launch, chat, try: tryout, registrations, cluster };
const HOME = 'models';

let cleanup = null;
// What the login page says (session expired, logged out) and where to go after it.
let loginMessage = '';
let afterLogin = HOME;

function go(page) {
  const hash = `#/${page}`;
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  const { page: wanted, params } = parseHash(location.hash);
  let page = PAGES[wanted] ? wanted : HOME;
  if (session.authOn()) {
    const state = session.state();
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
  } else if (page === 'login') {
    page = HOME;
  }
  // An unknown or refused page: show where the user really is, without a history entry.
  if (wanted !== page) history.replaceState(null, '', `#/${page}`);
  show(page, params);
}

function show(page, params) {
  if (cleanup) cleanup();
  cleanup = null;
  if (page !== 'login') clearNotices();
  updateHeader(page);
  const main = document.getElementById('main');
  main.replaceChildren();
  main.dataset.page = page;
  const context = { params, go };
  if (page === 'login') {
    context.message = loginMessage;
    context.onLoggedIn = () => {
      loginMessage = '';
      clearNotices();
      go(afterLogin === 'login' ? HOME : afterLogin);
    };
  }
  const result = PAGES[page].render(main, context);
  cleanup = typeof result === 'function' ? result : null;
}

function updateHeader(page) {
  const loggedIn = page !== 'login';
  document.getElementById('nav').hidden = !loggedIn;
  document.getElementById('who').hidden = !(loggedIn && session.authOn());
  document.getElementById('auth-off').hidden = session.authOn();
  document.getElementById('who-name').replaceChildren(
    h('strong', {}, session.username()),
    h('span', { class: 'muted' }, ` (${session.scopeList().join(', ') || 'no permissions'})`),
  );
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.page === page);
    if (link.dataset.page === 'cluster') {
      const denied = !session.can('admin');
      link.classList.toggle('denied', denied);
      link.title = denied ? 'Requires the admin permission' : '';
      if (denied) link.setAttribute('aria-disabled', 'true');
      else link.removeAttribute('aria-disabled');
    }
  }
}

function logout() {
  session.clear();
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
