// Running models (`GET /v1/models`) and launches still in progress or failed
// (`GET /v1/models/instances`), with a terminate button for users holding models:stop.

import * as api from './api.js';
import * as session from './session.js';
import { allow, h, notify, size, table } from './dom.js';

const POLL_MS = 5000;

function tryLink(model) {
  const uid = encodeURIComponent(model.id);
  const abilities = Array.isArray(model.model_ability) ? model.model_ability : ['chat'];
  if (model.model_type === 'LLM' && abilities.includes('chat')) {
    return h('a', { href: `#/chat?model=${uid}`, class: 'button-link' }, 'Chat');
  }
  if (model.model_type === 'embedding' || model.model_type === 'rerank') {
    return h('a', { href: `#/try?model=${uid}`, class: 'button-link' }, 'Try');
  }
  return null;
}

function terminateButton(uid, reload) {
  const button = h('button', { type: 'button', class: 'danger terminate', 'data-uid': uid }, 'Terminate');
  let armed = null;
  button.addEventListener('click', async () => {
    // Two clicks: the first arms the button for a few seconds (no modal dialog).
    if (!armed) {
      button.textContent = 'Really terminate?';
      armed = setTimeout(() => {
        armed = null;
        button.textContent = 'Terminate';
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    button.textContent = 'Terminating\u2026';
    try {
      await api.del(`v1/models/${encodeURIComponent(uid)}`, { action: `terminating ${uid}` });
      notify('ok', `Terminated ${uid}.`);
    } catch (err) {
      api.report(err);
    }
    reload();
  });
  allow(session.can('models:stop'), 'models:stop', button);
  return button;
}

export function render(main) {
  const body = h('div', { id: 'models-body' }, h('p', { class: 'muted' }, 'Loading\u2026'));
  const refresh = h('button', { type: 'button', id: 'refresh-models', class: 'secondary' }, 'Refresh');
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Running models'), refresh),
    body,
  );

  let timer = null;
  let stopped = false;
  let shown = null; // what is on screen, so a poll that changes nothing redraws nothing

  async function load() {
    clearTimeout(timer);
    let running;
    let instances;
    try {
      [running, instances] = await Promise.all([
        api.get('v1/models', { action: 'listing models' }),
        api.get('v1/models/instances', { action: 'listing models' }),
      ]);
    } catch (err) {
      if (stopped) return;
      body.replaceChildren(h('p', { class: 'muted' }, 'The model list is not available.'));
      api.report(err);
      return; // no polling after a failure: it would repeat the same message
    }
    if (stopped) return;
    const models = running.data || [];
    const pending = (instances || []).filter((i) => i.status !== 'READY');
    const key = JSON.stringify([models, pending]);
    if (key !== shown) {
      shown = key;
      draw(models, pending);
    }
    timer = setTimeout(load, POLL_MS);
  }

  function draw(models, pending) {
    const parts = [];
    if (models.length === 0) {
      parts.push(h('p', { class: 'empty' }, 'No model is running. ', h('a', { href: '#/launch' }, 'Launch one'), '.'));
    } else {
      const rows = models.map((m) => h('tr', { 'data-uid': m.id },
        h('td', { class: 'mono' }, m.id),
        h('td', {}, m.model_name || ''),
        h('td', {}, m.model_type || ''),
        h('td', {}, m.model_format || ''),
        h('td', {}, m.quantization || ''),
        h('td', {}, size(m.model_size_in_billions)),
        h('td', { class: 'num' }, String(m.replica ?? '')),
        h('td', {}, m.model_engine || ''),
        h('td', { class: 'actions' }, tryLink(m), terminateButton(m.id, load))));
      parts.push(table(['UID', 'Name', 'Type', 'Format', 'Quantization', 'Size (B)', 'Replicas', 'Engine', ''],
        rows, { id: 'models-table' }));
    }
    if (pending.length > 0) {
      const rows = pending.map((i) => h('tr', { 'data-uid': i.model_uid },
        h('td', { class: 'mono' }, i.model_uid),
        h('td', {}, i.model_name || ''),
        h('td', {}, h('span', { class: `status ${String(i.status).toLowerCase()}` }, i.status)),
        h('td', {}, i.error_message || ''),
        h('td', { class: 'actions' }, terminateButton(i.model_uid, load))));
      parts.push(h('h2', {}, 'Launching or failed'),
        table(['UID', 'Name', 'Status', 'Error', ''], rows, { id: 'pending-table' }));
    }
    body.replaceChildren(...parts);
  }

  refresh.addEventListener('click', () => {
    shown = null;
    load();
  });
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
