// The audit log of the identity store (`admin`): `GET /v1/admin/audit`, newest first, filtered
// by username and action, paged back with `before_id` ("Older").

import * as api from './api.js';
import * as session from './session.js';
import { deniedHint, field, h, table } from './dom.js';

const PAGE_SIZE = 50;
const ACTIONS = ['login', 'refresh', 'logout', 'user.bootstrap', 'user.create', 'user.update', 'user.password',
  'user.delete', 'key.create', 'key.update', 'key.revoke', 'denied'];

function when(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString().slice(0, 19).replace('T', ' ');
}

export function render(main, { params }) {
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Audit log')));
  if (!session.can('admin')) {
    main.append(deniedHint(false, 'admin', 'read the audit log'));
    return undefined;
  }
  // `#/audit?limit=N` (the tests page with a small N).
  const limit = Math.max(1, Math.min(1000, Number(params.get('limit')) || PAGE_SIZE));
  const username = h('input', { id: 'audit-username', autocomplete: 'off', value: params.get('username') || '' });
  const action = h('input', { id: 'audit-action', autocomplete: 'off', list: 'audit-actions', value: params.get('action') || '' });
  const actions = h('datalist', { id: 'audit-actions' }, ACTIONS.map((a) => h('option', { value: a })));
  const apply = h('button', { type: 'submit', id: 'audit-apply' }, 'Filter');
  const events = table(['Time (UTC)', 'Action', 'Outcome', 'User', 'Key', 'Target', 'Address', 'Detail'], [], { id: 'audit-table' });
  const rowsBody = events.querySelector('tbody');
  const list = h('div', { id: 'audit-list' }, h('p', { class: 'muted' }, 'Loading\u2026'));
  const older = h('button', { type: 'button', id: 'audit-older', class: 'secondary', hidden: true }, 'Older');
  let stopped = false;
  let oldest = null;

  async function load(append) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (username.value.trim()) query.set('username', username.value.trim());
    if (action.value.trim()) query.set('action', action.value.trim());
    if (append && oldest !== null) query.set('before_id', String(oldest));
    older.disabled = true;
    let page;
    try {
      page = await api.get(`v1/admin/audit?${query}`, { action: 'reading the audit log' });
    } catch (err) {
      if (stopped) return;
      if (!append) list.replaceChildren(h('p', { class: 'muted' }, 'The audit log is not available.'));
      api.report(err);
      older.disabled = false;
      return;
    }
    if (stopped) return;
    if (!append) rowsBody.replaceChildren();
    rowsBody.append(...page.map((e) => h('tr', { 'data-id': e.id, 'data-action': e.action },
      h('td', { class: 'mono', title: String(e.at) }, when(e.at)),
      h('td', { class: 'action' }, e.action),
      h('td', { class: e.outcome === 'ok' ? 'outcome' : 'outcome refused' }, e.outcome),
      h('td', { class: 'username' }, e.username || ''),
      h('td', { class: 'mono' }, e.key_prefix || ''),
      h('td', {}, e.target || ''),
      h('td', { class: 'mono' }, e.address || ''),
      h('td', { class: 'detail' }, e.detail || ''))));
    if (page.length) oldest = page[page.length - 1].id;
    list.replaceChildren(rowsBody.children.length ? events : h('p', { class: 'empty' }, 'No event matches.'));
    // A full page may have more behind it.
    older.hidden = page.length < limit;
    older.disabled = false;
  }

  older.addEventListener('click', () => load(true));
  main.append(
    h('form', { class: 'card filters', id: 'audit-filter', onsubmit: (event) => { event.preventDefault(); load(false); } },
      h('div', { class: 'row' },
        field('Username', username),
        field('Action', action),
        actions,
        apply)),
    h('section', { class: 'card' }, list, h('div', { class: 'row' }, older)),
  );
  load(false);
  return () => { stopped = true; };
}
