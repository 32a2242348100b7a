// API keys of the identity store: one's own with `keys:create` ("My keys"), everyone's with
// `keys:manage`. The list (`GET /v1/admin/keys`: display prefixes only), creating one
// (`POST /v1/admin/keys`: the answer holds the key, shown here once and never again), enabling
// or disabling (`PUT /v1/admin/keys/{id}`) and revoking (`DELETE`).

import * as api from './api.js';
import * as session from './session.js';
import { confirmButton, field, h, notify, table } from './dom.js';

const LIMITS = [
  ['requests_per_minute', 'Requests per minute'],
  ['tokens_per_minute', 'Tokens per minute'],
  ['concurrent_requests', 'Concurrent requests'],
  ['tokens_per_day', 'Tokens per day'],
  ['tokens_per_month', 'Tokens per month'],
];

function day(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return 'never';
  return new Date(unixSeconds * 1000).toISOString().slice(0, 10);
}

function modelsOf(key) {
  const perms = key.model_permissions || [];
  if (perms.length === 0 || perms.some((p) => p.permission_type === 'all')) return 'all';
  return perms.map((p) => (p.permission_type === 'model_type' ? `type ${p.permission_value}` : p.permission_value)).join(', ');
}

function usageOf(key) {
  const u = key.usage || {};
  const tokens = (u.prompt_tokens || 0) + (u.completion_tokens || 0);
  return `${u.requests || 0} requests, ${tokens} tokens`;
}

function limitsOf(key) {
  const set = LIMITS.filter(([name]) => key.limits && key.limits[name] !== null && key.limits[name] !== undefined);
  return set.map(([name, label]) => `${label.toLowerCase()}: ${key.limits[name]}`).join(', ');
}

export function render(main) {
  const everyone = session.can('keys:manage');
  main.append(h('div', { class: 'page-head' }, h('h1', {}, everyone ? 'API keys' : 'My keys')));
  const list = h('div', { id: 'keys-list' }, h('p', { class: 'muted' }, 'Loading\u2026'));
  const created = h('div', { id: 'new-key', class: 'card new-key', hidden: true });
  let stopped = false;

  async function load() {
    let keys;
    try {
      keys = await api.get('v1/admin/keys', { action: 'listing API keys' });
    } catch (err) {
      if (stopped) return;
      list.replaceChildren(h('p', { class: 'muted' }, 'The keys are not available.'));
      api.report(err);
      return;
    }
    if (stopped) return;
    if (keys.length === 0) {
      list.replaceChildren(h('p', { class: 'empty' }, 'No API key yet.'));
      return;
    }
    const rows = keys.map((k) => h('tr', { 'data-prefix': k.key_prefix },
      h('td', { class: 'mono prefix' }, `${k.key_prefix}\u2026`),
      h('td', {}, k.name || ''),
      h('td', {}, k.owner_username || String(k.user_id)),
      h('td', { class: 'enabled' }, k.enabled ? 'yes' : 'no'),
      h('td', {}, day(k.expires_at)),
      h('td', { class: 'models' }, modelsOf(k)),
      h('td', { class: 'usage', title: limitsOf(k) || 'no limits' }, usageOf(k)),
      h('td', { class: 'actions' }, actions(k))));
    list.replaceChildren(table(['Prefix', 'Name', 'Owner', 'Enabled', 'Expires', 'Models', 'Usage', ''],
      rows, { id: 'keys-table' }));
  }

  function actions(k) {
    const toggle = h('button', { type: 'button', class: 'secondary small toggle' }, k.enabled ? 'Disable' : 'Enable');
    toggle.addEventListener('click', async () => {
      toggle.disabled = true;
      try {
        await api.put(`v1/admin/keys/${k.id}`, { enabled: !k.enabled }, { action: 'changing an API key' });
        notify('ok', `${k.enabled ? 'Disabled' : 'Enabled'} the key ${k.key_prefix}\u2026`);
      } catch (err) {
        api.report(err);
      }
      load();
    });
    const revoke = confirmButton('Revoke', 'Really revoke?', { 'data-prefix': k.key_prefix }, async () => {
      try {
        await api.del(`v1/admin/keys/${k.id}`, { action: 'revoking an API key' });
        notify('ok', `Revoked the key ${k.key_prefix}\u2026`);
      } catch (err) {
        api.report(err);
      }
      load();
    });
    revoke.classList.add('revoke');
    return [toggle, revoke];
  }

  /** Shows the new key once: it is in no later answer. */
  function showCreated(answer) {
    const value = h('code', { id: 'new-key-value', class: 'mono' }, answer.key);
    const copy = h('button', { type: 'button', id: 'new-key-copy', class: 'secondary small' }, 'Copy');
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(answer.key);
        notify('ok', 'The key is copied.');
      } catch {
        // No clipboard access: select it for Ctrl+C.
        getSelection().selectAllChildren(value);
        notify('info', 'Select the key and copy it yourself (Ctrl+C): the browser refused the clipboard.');
      }
    });
    const done = h('button', { type: 'button', class: 'secondary small', onclick: () => { created.hidden = true; created.replaceChildren(); } }, 'Done');
    created.replaceChildren(
      h('h2', {}, `New key${answer.name ? ` \u201c${answer.name}\u201d` : ''}`),
      h('div', { class: 'row key-box' }, value, copy, done),
      h('p', { class: 'notice-inline' }, 'Copy it now. It will not be shown again: the server keeps only a hash of it.'));
    created.hidden = false;
  }

  // The create form.
  const name = h('input', { id: 'key-name', autocomplete: 'off', maxlength: 100 });
  const expires = h('input', { id: 'key-expires', type: 'date' });
  const models = h('select', { id: 'key-models', multiple: true, size: 4 });
  const typedModels = h('input', { id: 'key-models-text', autocomplete: 'off', placeholder: 'uid, uid, ...', hidden: true });
  const limits = LIMITS.map(([limit, label]) => [limit, h('input', { id: `key-limit-${limit}`, type: 'number', min: 1, step: 1 }), label]);
  const submit = h('button', { type: 'submit', id: 'key-submit' }, 'Create key');

  async function loadModels() {
    try {
      const running = await api.get('v1/models', { action: 'listing models' });
      if (stopped) return;
      const ids = (running.data || []).map((m) => m.id);
      models.replaceChildren(...ids.map((id) => h('option', { value: id }, id)));
      models.disabled = ids.length === 0;
    } catch {
      // Without models:list: the uids are typed instead.
      models.hidden = true;
      typedModels.hidden = false;
    }
  }

  async function onSubmit(event) {
    event.preventDefault();
    const body = {};
    if (name.value.trim()) body.name = name.value.trim();
    if (expires.value) body.expires_at = expires.value;
    const picked = models.hidden
      ? typedModels.value.split(',').map((s) => s.trim()).filter(Boolean)
      : [...models.selectedOptions].map((o) => o.value);
    if (picked.length) body.models = picked;
    const set = limits.filter(([, input]) => input.value !== '');
    if (set.length) body.limits = Object.fromEntries(set.map(([limit, input]) => [limit, Number(input.value)]));
    submit.disabled = true;
    try {
      const answer = await api.post('v1/admin/keys', body, { action: 'creating an API key' });
      showCreated(answer);
      name.value = '';
      expires.value = '';
      for (const o of models.options) o.selected = false;
      load();
    } catch (err) {
      api.report(err);
    } finally {
      submit.disabled = false;
    }
  }

  main.append(
    created,
    h('div', { class: 'stack' },
      h('section', { class: 'card' }, h('h2', {}, everyone ? 'Every user\u2019s keys' : 'Your keys'), list),
      h('form', { class: 'card', id: 'key-form', onsubmit: onSubmit },
        h('h2', {}, 'Create a key'),
        field('Name', name),
        field('Expires', expires, 'Empty: never.'),
        h('div', { class: 'field' },
          h('label', { for: models.id }, 'Models'),
          models, typedModels,
          h('small', { class: 'help' }, 'None picked: every model. Otherwise only these: the key does not see the others.')),
        h('details', { class: 'limits' },
          h('summary', {}, 'Limits (optional)'),
          h('div', { class: 'grid2' }, limits.map(([, input, label]) => field(label, input)))),
        h('p', { class: 'help' }, 'The key acts for you with models:list and models:read, never more than you hold.'),
        h('div', { class: 'row' }, submit))),
  );
  load();
  loadModels();
  return () => { stopped = true; };
}
