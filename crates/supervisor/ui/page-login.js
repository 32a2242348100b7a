// The login page: `POST /token` with username and password; the tokens go to sessionStorage.
// An answer with `must_change_password` leads to the password page (app.js routes there).
// Below the form, one button per single sign-on provider of the server: those leave the page
// for the provider, which sends the browser back to `#/sso/<code>` (app.js finishes there).

import * as api from './api.js';
import * as session from './session.js';
import { append, field, h } from './dom.js';

export function render(main, { message, error: shownError, next, onLoggedIn }) {
  const username = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { id: 'login-error', class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit', id: 'login-submit' }, 'Log in');

  async function onSubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = '';
    try {
      const res = await api.login(username.value, password.value);
      session.store(res.access_token, res.refresh_token);
      // Not a provider's session: logging out must not send the browser to one.
      session.setSsoProvider(null);
      session.setMe(undefined);
      onLoggedIn(res.must_change_password ? password.value : '');
    } catch (err) {
      // 401: "Incorrect username or password"; 429: too many failures, with the wait.
      error.textContent = err.message || String(err);
      password.select();
    } finally {
      submit.disabled = false;
    }
  }

  // Filled once the server has said which providers it has (none: stays empty and hidden).
  const sso = h('div', { id: 'sso-providers', class: 'sso', hidden: true });
  if (shownError) error.textContent = shownError;

  main.append(
    h('form', { class: 'card login', id: 'login-form', onsubmit: onSubmit },
      h('h1', {}, 'Log in to xinference-rs'),
      message ? h('p', { id: 'login-message', class: 'notice-inline' }, message) : null,
      field('Username', username),
      field('Password', password),
      error,
      submit,
      sso),
  );
  username.focus();
  showProviders(sso, next);
}

async function showProviders(box, next) {
  const providers = await api.ssoProviders();
  if (!providers.length) return;
  append(box, [
    h('p', { class: 'sso-or muted' }, 'or'),
    providers.map((p) => h('button', {
      type: 'button',
      id: `sso-${p.name}`,
      class: 'secondary sso-button',
      // A top-level navigation: the provider's login page must own the window (no fetch, no
      // frame). The server answers with the redirect; `h` only builds in-page links.
      onclick: () => {
        session.startSso(p.name, next);
        location.href = api.ssoAuthorizeUrl(p.name);
      },
    }, `Log in with ${p.display_name || p.name}`)),
  ]);
  box.hidden = false;
}
