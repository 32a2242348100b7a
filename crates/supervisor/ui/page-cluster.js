// Cluster status for admins: heartbeats (`GET /status`), nodes (`GET /v1/cluster/info`) and
// workers (`GET /v1/workers`). Fields are rendered generically, so fields a newer server adds
// (resources, heartbeat times, states) show up without a UI change.

import * as api from './api.js';
import * as session from './session.js';
import { ago, bytes, deniedHint, h, table } from './dom.js';

const POLL_MS = 3000;

/** Nested objects become dotted keys; lists of scalars are joined. */
function flatten(value, prefix = '', out = []) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else {
    out.push([prefix, value]);
  }
  return out;
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const hms = [Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60), s % 60]
    .map((n) => String(n).padStart(2, '0')).join(':');
  return d ? `${d} d ${hms}` : hms;
}

/** A value worded by what its key suggests: bytes, times, ratios. Returns [text, tooltip]. */
function present(key, value) {
  const name = key.toLowerCase();
  if (value === null || value === undefined) return ['\u2014', ''];
  if (typeof value === 'boolean') return [value ? 'yes' : 'no', ''];
  if (Array.isArray(value)) {
    const scalar = value.every((v) => v === null || typeof v !== 'object');
    return [scalar ? value.join(', ') : JSON.stringify(value), ''];
  }
  const isTime = /(time|heartbeat|_ts$|^ts$|created|last_seen)/.test(name);
  if (typeof value === 'number') {
    if (/(mem|memory|vram|bytes)/.test(name) && value >= 1024) return [bytes(value), `${value} bytes`];
    if (isTime && value > 1e9 && value < 1e11) return [ago(value), new Date(value * 1000).toISOString()];
    if (/uptime/.test(name)) return [duration(value), `${value} s`];
    if (/(utilization|usage|util)$/.test(name) && value >= 0 && value <= 1) return [`${(value * 100).toFixed(1)} %`, String(value)];
    return [Number.isInteger(value) ? String(value) : value.toFixed(3), String(value)];
  }
  if (typeof value === 'string' && isTime && !Number.isNaN(Date.parse(value))) {
    return [ago(Date.parse(value) / 1000), value];
  }
  return [String(value), ''];
}

function cell(key, value) {
  const [text, title] = present(key, value);
  return h('td', { title: title || undefined, class: typeof value === 'number' ? 'num' : undefined }, text);
}

/** One table for a list of objects: a column per (flattened) key any of them has, after an
 *  optional first column `lead` = [title, (index) => cell]. */
function genericTable(items, id, lead) {
  const flat = items.map((item) => new Map(flatten(item)));
  const keys = [];
  for (const m of flat) for (const k of m.keys()) if (!keys.includes(k)) keys.push(k);
  // Liveness first (heartbeat times, states), then the rest in the server's order.
  const rank = (k) => (/(heartbeat|update_time|last_seen)/i.test(k) ? 0 : /(^|\.)(status|state|alive)$/i.test(k) ? 1 : 2);
  keys.sort((a, b) => rank(a) - rank(b));
  const rows = flat.map((m, i) => h('tr', {}, lead ? lead[1](i) : null, keys.map((k) => cell(k, m.get(k)))));
  const headers = keys.map((k) => h('span', { title: k }, label(k)));
  return table([...(lead ? [lead[0]] : []), ...headers], rows, { id, class: 'generic' });
}

/** `status.cpu.memory_available` -> `cpu memory available`: shorter headers that can wrap. */
function label(key) {
  return key.replace(/^status\./, '').replace(/[._-]+/g, ' ');
}

export function render(main) {
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Cluster')));
  if (!session.can('admin')) {
    main.append(deniedHint(false, 'admin', 'see the cluster status'));
    return undefined;
  }
  const summary = h('p', { id: 'cluster-summary' });
  const heartbeats = h('div', { id: 'cluster-heartbeats' });
  const nodes = h('div', { id: 'cluster-nodes' });
  const workers = h('div', { id: 'cluster-workers' });
  main.append(
    summary,
    h('section', { class: 'card' }, h('h2', {}, 'Workers and heartbeats'), heartbeats),
    h('section', { class: 'card' }, h('h2', {}, 'Nodes'), nodes),
    h('section', { class: 'card' }, h('h2', {}, 'Worker models'), workers),
  );

  let timer = null;
  let stopped = false;

  async function load() {
    let status;
    let info;
    let workerList;
    let version;
    try {
      [status, info, workerList, version] = await Promise.all([
        api.get('status'),
        api.get('v1/cluster/info?detailed=true', { action: 'reading the cluster info' }),
        api.get('v1/workers', { action: 'listing workers' }),
        api.get('v1/cluster/version', { action: 'reading the version' }),
      ]);
    } catch (err) {
      if (!stopped) api.report(err);
      return;
    }
    if (stopped) return;
    const entries = Object.entries(status.workers || {});
    summary.replaceChildren(
      `Version ${version.version || '?'} \u00b7 up ${duration(status.uptime || 0)} \u00b7 `,
      `${entries.length} worker${entries.length === 1 ? '' : 's'} reporting`);
    const address = ['Worker', (i) => h('td', { class: 'mono' }, entries[i][0])];
    heartbeats.replaceChildren(entries.length
      ? genericTable(entries.map(([, w]) => w), 'heartbeat-table', address)
      : h('p', { class: 'empty' }, 'No worker is reporting.'));
    nodes.replaceChildren(genericTable(Array.isArray(info) ? info : [info], 'nodes-table'));
    workers.replaceChildren(...(Array.isArray(workerList) ? workerList : []).map((w) => {
      const { models = {}, ...fields } = w;
      const uids = Object.keys(models);
      return h('div', { class: 'worker' },
        h('dl', {}, flatten(fields).map(([k, v]) => [h('dt', {}, k), h('dd', { title: present(k, v)[1] || undefined }, present(k, v)[0])])),
        uids.length
          ? table(['Replica', 'Model', 'Type'], uids.map((u) => h('tr', {},
            h('td', { class: 'mono' }, u),
            h('td', {}, models[u].model_name || ''),
            h('td', {}, models[u].model_type || ''))), { class: 'worker-models' })
          : h('p', { class: 'muted' }, 'No model replicas.'));
    }));
    timer = setTimeout(load, POLL_MS);
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
