// Users of the identity store (`users:manage`): the list (`GET /v1/admin/users`: the store's
// users and, read-only, the config file's), adding one (`POST`), enabling or disabling,
// permissions, a new password (`PUT /v1/admin/users/{id}`, `.../password`) and deleting
// (`DELETE`). The server applies the rules (nobody grants what they do not hold, the last admin
// stays); its answer is shown as it is.

import * as api from './api.js';
import * as session from './session.js';
import { confirmButton, deniedHint, field, h, notify, table } from './dom.js';

export const PERMISSIONS = [
  'models:list', 'models:read', 'models:register', 'models:unregister', 'models:start',
  'models:stop', 'users:manage', 'keys:create', 'keys:manage', 'admin',
];

function when(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return '\u2014';
  return new Date(unixSeconds * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

/** A checkbox per permission; the ones the user does not hold cannot be granted. */
export function permissionBoxes(idPrefix, checked = []) {
  const boxes = PERMISSIONS.map((name) => {
    const box = h('input', { type: 'checkbox', id: `${idPrefix}-${name.replace(':', '-')}`, value: name, checked: checked.includes(name) });
    if (!session.can(name)) {
      box.disabled = true;
      box.title = `You cannot grant ${name}: you do not hold it`;
    }
    return h('label', { class: 'check', title: box.title || undefined }, box, name);
  });
  const picked = () => boxes.map((l) => l.querySelector('input')).filter((b) => b.checked).map((b) => b.value);
  return { element: h('div', { class: 'checks' }, boxes), picked };
}

export function render(main) {
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Users')));
  if (!session.can('users:manage')) {
    main.append(deniedHint(false, 'users:manage', 'manage users'));
    return undefined;
  }
  const list = h('div', { id: 'users-list' }, h('p', { class: 'muted' }, 'Loading\u2026'));
  const editor = h('div', { id: 'user-editor' });
  let stopped = false;

  async function load() {
    let all;
    try {
      all = await api.get('v1/admin/users', { action: 'listing users' });
    } catch (err) {
      if (stopped) return;
      list.replaceChildren(h('p', { class: 'muted' }, 'The users are not available.'));
      api.report(err);
      return;
    }
    if (stopped) return;
    const rows = all.map((u) => h('tr', { 'data-username': u.username },
      h('td', {}, h('strong', {}, u.username)),
      h('td', {}, u.source),
      h('td', { class: 'enabled' }, u.enabled ? 'yes' : 'no'),
      h('td', { class: 'must-change' }, u.must_change_password ? 'yes' : 'no'),
      h('td', { class: 'permissions' }, u.permissions.join(', ') || '\u2014'),
      h('td', {}, when(u.created_at)),
      h('td', { class: 'actions' }, actions(u))));
    list.replaceChildren(table(['Username', 'Source', 'Enabled', 'Must change password', 'Permissions', 'Created (UTC)', ''],
      rows, { id: 'users-table' }));
  }

  function actions(u) {
    if (u.id === null || u.id === undefined) {
      return h('span', { class: 'muted', title: 'Edit the --auth-config file and reload it (SIGHUP)' }, 'config file, read-only');
    }
    const me = session.me();
    const own = me && me.id === u.id;
    const toggle = h('button', { type: 'button', class: 'secondary small toggle' }, u.enabled ? 'Disable' : 'Enable');
    toggle.addEventListener('click', () => change(u, { enabled: !u.enabled }, `${u.enabled ? 'Disabled' : 'Enabled'} ${u.username}.`, toggle));
    const perms = h('button', { type: 'button', class: 'secondary small edit-permissions' }, 'Permissions');
    perms.addEventListener('click', () => editPermissions(u));
    // Single sign-on users have no password here (the server refuses to set one).
    const reset = u.source === 'oidc'
      ? null
      : own
        ? h('a', { href: '#/password', class: 'button-link' }, 'Change password')
        : h('button', { type: 'button', class: 'secondary small reset-password', onclick: () => resetPassword(u) }, 'Reset password');
    const remove = confirmButton('Delete', 'Really delete?', { 'data-username': u.username }, () => removeUser(u));
    remove.classList.add('delete');
    return [toggle, perms, reset, remove].filter(Boolean);
  }

  async function change(u, body, done, button) {
    if (button) button.disabled = true;
    try {
      await api.put(`v1/admin/users/${u.id}`, body, { action: `changing ${u.username}` });
      notify('ok', done);
      editor.replaceChildren();
    } catch (err) {
      api.report(err);
    }
    load();
  }

  function editPermissions(u) {
    const boxes = permissionBoxes('edit-perm', u.permissions);
    const save = h('button', { type: 'submit', id: 'edit-permissions-save' }, 'Save permissions');
    const cancel = h('button', { type: 'button', class: 'secondary', onclick: () => editor.replaceChildren() }, 'Cancel');
    editor.replaceChildren(h('form', { class: 'card', id: 'edit-permissions-form', onsubmit: (event) => {
      event.preventDefault();
      change(u, { permissions: boxes.picked() }, `Changed the permissions of ${u.username}.`, save);
    } },
    h('h2', {}, `Permissions of ${u.username}`),
    boxes.element,
    h('div', { class: 'row' }, save, cancel)));
  }

  function resetPassword(u) {
    const input = h('input', { id: 'reset-password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
    const mustChange = h('input', { id: 'reset-must-change', type: 'checkbox', checked: true });
    const save = h('button', { type: 'submit', id: 'reset-password-save' }, 'Set password');
    const cancel = h('button', { type: 'button', class: 'secondary', onclick: () => editor.replaceChildren() }, 'Cancel');
    editor.replaceChildren(h('form', { class: 'card', id: 'reset-password-form', onsubmit: async (event) => {
      event.preventDefault();
      save.disabled = true;
      try {
        await api.put(`v1/admin/users/${u.id}/password`, { new_password: input.value }, { action: `setting the password of ${u.username}` });
        if (mustChange.checked) await api.put(`v1/admin/users/${u.id}`, { must_change_password: true }, { action: `changing ${u.username}` });
        notify('ok', `Set a new password for ${u.username}.`);
        editor.replaceChildren();
      } catch (err) {
        api.report(err);
        save.disabled = false;
      }
      load();
    } },
    h('h2', {}, `New password for ${u.username}`),
    field('New password', input, 'At least 8 characters. The user\u2019s other sessions end.'),
    h('label', { class: 'check' }, mustChange, ' Must change it at the next login'),
    h('div', { class: 'row' }, save, cancel)));
    input.focus();
  }

  async function removeUser(u) {
    try {
      await api.del(`v1/admin/users/${u.id}`, { action: `deleting ${u.username}` });
      notify('ok', `Deleted ${u.username}.`);
    } catch (err) {
      api.report(err);
    }
    load();
  }

  // The add form.
  const username = h('input', { id: 'new-username', autocomplete: 'off', required: true, maxlength: 64 });
  const password = h('input', { id: 'new-user-password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
  const mustChange = h('input', { id: 'new-user-must-change', type: 'checkbox', checked: true });
  const boxes = permissionBoxes('new-perm', ['models:list', 'models:read']);
  const submit = h('button', { type: 'submit', id: 'user-submit' }, 'Add user');

  async function onSubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    try {
      await api.post('v1/admin/users', {
        username: username.value.trim(),
        password: password.value,
        permissions: boxes.picked(),
        must_change_password: mustChange.checked,
      }, { action: 'adding a user' });
      notify('ok', `Added ${username.value.trim()}.`);
      username.value = '';
      password.value = '';
      load();
    } catch (err) {
      api.report(err);
    } finally {
      submit.disabled = false;
    }
  }

  main.append(
    h('div', { class: 'stack' },
      h('section', { class: 'card' }, h('h2', {}, 'Accounts'), list, editor),
      h('form', { class: 'card', id: 'user-form', onsubmit: onSubmit },
        h('h2', {}, 'Add a user'),
        field('Username', username, 'Letters, digits, . _ - @; at most 64.'),
        field('Password', password, 'At least 8 characters.'),
        h('label', { class: 'check' }, mustChange, ' Must change the password at the first login'),
        h('h3', {}, 'Permissions'),
        boxes.element,
        h('div', { class: 'row' }, submit))),
  );
  load();
  return () => { stopped = true; };
}
