// The login page: `POST /token` with username and password; the tokens go to sessionStorage.
// An answer with `must_change_password` leads to the password page (app.js routes there).

import * as api from './api.js';
import * as session from './session.js';
import { field, h } from './dom.js';

export function render(main, { message, onLoggedIn }) {
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

  main.append(
    h('form', { class: 'card login', id: 'login-form', onsubmit: onSubmit },
      h('h1', {}, 'Log in to xinference-rs'),
      message ? h('p', { id: 'login-message', class: 'notice-inline' }, message) : null,
      field('Username', username),
      field('Password', password),
      error,
      submit),
  );
  username.focus();
}
