// Choosing a new password: `PUT /v1/admin/users/{id}/password` with the current one, for the
// logged-in user (the id from `GET /v1/auth/me`). Forced after a login whose answer said
// `must_change_password` (the first admin, a user whose password an admin set); otherwise
// reached from the header's "Change password".

import * as api from './api.js';
import * as session from './session.js';
import { field, h } from './dom.js';

const MIN_LENGTH = 8;

export function render(main, { forced, currentPassword, onChanged }) {
  const me = session.me();
  if (!me || me.id === null || me.id === undefined) {
    main.append(h('div', { class: 'card login' },
      h('h1', {}, 'Change password'),
      h('p', {}, 'Your account comes from the server\u2019s config file (--auth-config): its password is changed there.')));
    return;
  }
  const current = h('input', { id: 'current-password', type: 'password', autocomplete: 'current-password', required: true, value: currentPassword || '' });
  const next = h('input', { id: 'new-password', type: 'password', autocomplete: 'new-password', required: true, minlength: MIN_LENGTH });
  const repeat = h('input', { id: 'repeat-password', type: 'password', autocomplete: 'new-password', required: true, minlength: MIN_LENGTH });
  const error = h('p', { id: 'password-error', class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit', id: 'password-submit' }, 'Change password');

  async function onSubmit(event) {
    event.preventDefault();
    error.textContent = '';
    if (next.value !== repeat.value) {
      error.textContent = 'The two new passwords differ.';
      repeat.select();
      return;
    }
    submit.disabled = true;
    try {
      await api.put(`v1/admin/users/${encodeURIComponent(me.id)}/password`,
        { old_password: current.value, new_password: next.value },
        { action: 'changing your password' });
      session.setMe(await api.me());
      onChanged('Your password is changed.');
    } catch (err) {
      // 401 is handled (login page); the rest: wrong current password, too short, ...
      if (!(err instanceof api.ApiError && err.status === 401)) error.textContent = err.message || String(err);
    } finally {
      submit.disabled = false;
    }
  }

  main.append(
    h('form', { class: 'card login', id: 'password-form', onsubmit: onSubmit },
      h('h1', {}, forced ? 'Choose a new password' : 'Change password'),
      forced
        ? h('p', { id: 'password-message', class: 'notice-inline' },
          `The account ${me.username} must get a new password before it can be used.`)
        : null,
      field('Current password', current),
      field('New password', next, `At least ${MIN_LENGTH} characters.`),
      field('New password again', repeat),
      error,
      submit),
  );
  (current.value ? next : current).focus();
}
