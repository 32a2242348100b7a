// The model catalogue (built-in and custom registrations of each type) and the launch form
// (`POST /v1/models`), with launch progress from `GET /v1/models/{uid}/progress`.

import * as api from './api.js';
import * as session from './session.js';
import { allow, deniedHint, field, h, notify, size } from './dom.js';

const TYPES = ['LLM', 'embedding', 'rerank'];
const PROGRESS_MS = 700;

/** The launchable variants of a family: format, size and quantizations of each spec. */
function variants(family) {
  return (family.model_specs || []).map((spec) => {
    let quantizations = [];
    if (Array.isArray(spec.quantizations)) quantizations = spec.quantizations;
    for (const src of Object.values(spec.model_src || {})) {
      if (src && Array.isArray(src.quantizations)) quantizations = quantizations.concat(src.quantizations);
    }
    if (spec.quantization) quantizations = quantizations.concat([spec.quantization]);
    return {
      format: spec.model_format || '',
      size: spec.model_size_in_billions ?? '',
      quantizations: [...new Set(quantizations)],
    };
  });
}

function unique(values) {
  return [...new Set(values.filter((v) => v !== '' && v !== undefined && v !== null).map(String))];
}

function fillDatalist(list, values) {
  list.replaceChildren(...unique(values).map((v) => h('option', { value: v })));
}

/** The size as the API takes it: an integer, or a string such as "0_5". */
function sizeValue(text) {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  return t.replace('.', '_');
}

export function render(main) {
  const catalogue = { LLM: [], embedding: [], rerank: [] };
  const canStart = session.can('models:start');

  // The form.
  const type = h('select', { id: 'launch-type', name: 'model_type' }, TYPES.map((t) => h('option', { value: t }, t)));
  const nameList = h('datalist', { id: 'launch-names' });
  const name = h('input', { id: 'launch-name', name: 'model_name', list: 'launch-names', required: true, autocomplete: 'off', placeholder: 'smollm2-instruct' });
  const uid = h('input', { id: 'launch-uid', name: 'model_uid', autocomplete: 'off', placeholder: 'defaults to the model name' });
  const formatList = h('datalist', { id: 'launch-formats' });
  const format = h('input', { id: 'launch-format', name: 'model_format', list: 'launch-formats', autocomplete: 'off', placeholder: 'pytorch or ggufv2' });
  const quantList = h('datalist', { id: 'launch-quantizations' });
  const quantization = h('input', { id: 'launch-quantization', name: 'quantization', list: 'launch-quantizations', autocomplete: 'off', placeholder: 'none, Q4_1, \u2026' });
  const sizeList = h('datalist', { id: 'launch-sizes' });
  const sizeInput = h('input', { id: 'launch-size', name: 'model_size_in_billions', list: 'launch-sizes', autocomplete: 'off', placeholder: 'e.g. 0_135 or 3' });
  const path = h('input', { id: 'launch-path', name: 'model_path', autocomplete: 'off', placeholder: '/models/my-model or /models/model.Q4_1.gguf' });
  const replicas = h('input', { id: 'launch-replicas', name: 'replica', type: 'number', min: 1, max: 64, value: 1, required: true });
  const submit = h('button', { type: 'submit', id: 'launch-submit' }, 'Launch');
  const cancel = h('button', { type: 'button', id: 'launch-cancel', class: 'secondary', hidden: true }, 'Cancel launch');
  const progress = h('progress', { id: 'launch-progress', max: 1, value: 0, hidden: true });
  const status = h('p', { id: 'launch-status', class: 'muted', role: 'status' });
  const controls = [type, name, uid, format, quantization, sizeInput, path, replicas, submit];
  allow(canStart, 'models:start', controls);
  allow(session.can('models:stop'), 'models:stop', cancel);

  function family() {
    return catalogue[type.value].find((f) => f.model_name === name.value.trim());
  }

  function updateChoices() {
    fillDatalist(nameList, catalogue[type.value].map((f) => f.model_name));
    const vs = family() ? variants(family()) : [];
    fillDatalist(formatList, vs.map((v) => v.format));
    const sameFormat = vs.filter((v) => !format.value || v.format === format.value);
    fillDatalist(sizeList, sameFormat.map((v) => v.size));
    fillDatalist(quantList, sameFormat.flatMap((v) => v.quantizations));
  }

  function use(modelType, fam) {
    type.value = modelType;
    name.value = fam.model_name;
    const first = variants(fam)[0];
    format.value = first ? first.format : '';
    sizeInput.value = first ? String(first.size) : '';
    quantization.value = first && first.quantizations[0] ? first.quantizations[0] : '';
    updateChoices();
    path.focus();
  }

  async function onSubmit(event) {
    event.preventDefault();
    const body = {
      model_type: type.value,
      model_name: name.value.trim(),
      replica: Number(replicas.value) || 1,
    };
    const optional = {
      model_uid: uid.value.trim(),
      model_format: format.value.trim(),
      quantization: quantization.value.trim(),
      model_size_in_billions: sizeInput.value.trim(),
      model_path: path.value.trim(),
    };
    for (const [key, value] of Object.entries(optional)) {
      if (value !== '') body[key] = key === 'model_size_in_billions' ? sizeValue(value) : value;
    }
    const expectedUid = body.model_uid || body.model_name;
    submit.disabled = true;
    cancel.hidden = false;
    progress.hidden = false;
    progress.value = 0;
    status.textContent = `Launching ${expectedUid}\u2026`;
    let polling = session.can('models:read');
    const poll = async () => {
      while (polling) {
        await new Promise((r) => setTimeout(r, PROGRESS_MS));
        if (!polling) break;
        try {
          const p = await api.get(`v1/models/${encodeURIComponent(expectedUid)}/progress`, { action: 'reading launch progress' });
          if (polling && typeof p.progress === 'number') {
            progress.value = p.progress;
            status.textContent = `Launching ${expectedUid}\u2026 ${Math.round(p.progress * 100)}%`;
          }
        } catch {
          // Not registered yet, or already gone: the launch request itself reports the outcome.
        }
      }
    };
    poll();
    try {
      const res = await api.post('v1/models', body, { action: 'launching a model' });
      progress.value = 1;
      status.textContent = `${res.model_uid} is running.`;
      notify('ok', `Launched ${res.model_uid}.`, { href: '#/models', label: 'Running models' });
    } catch (err) {
      status.textContent = '';
      progress.hidden = true;
      api.report(err);
    } finally {
      polling = false;
      cancel.hidden = true;
      submit.disabled = !canStart;
    }
  }

  cancel.addEventListener('click', async () => {
    const target = uid.value.trim() || name.value.trim();
    try {
      await api.post(`v1/models/${encodeURIComponent(target)}/cancel`, undefined, { action: `cancelling the launch of ${target}` });
    } catch (err) {
      api.report(err);
    }
  });
  type.addEventListener('change', updateChoices);
  name.addEventListener('input', updateChoices);
  format.addEventListener('input', updateChoices);

  const form = h('form', { id: 'launch-form', class: 'card', onsubmit: onSubmit },
    h('h2', {}, 'Launch a model'),
    deniedHint(canStart, 'models:start', 'launch models'),
    h('div', { class: 'grid2' },
      field('Model type', type),
      field('Model name', name, 'A catalogue or registered name.'),
      field('Model UID', uid, 'Optional.'),
      field('Replicas', replicas),
      field('Format', format, 'LLMs: pytorch (safetensors) or ggufv2.'),
      field('Quantization', quantization),
      field('Size (billions)', sizeInput),
      field('Model path', path, 'Optional: a local folder or GGUF file on the worker; empty downloads the catalogue\u2019s files.')),
    nameList, formatList, quantList, sizeList,
    h('div', { class: 'row' }, submit, cancel, progress),
    status);

  // The catalogue.
  const filter = h('input', { id: 'catalogue-filter', type: 'search', placeholder: 'Filter', autocomplete: 'off' });
  const list = h('div', { id: 'catalogue-list' }, h('p', { class: 'muted' }, 'Loading\u2026'));

  function drawCatalogue() {
    const needle = filter.value.trim().toLowerCase();
    const sections = TYPES.map((t) => {
      const items = catalogue[t]
        .filter((f) => !needle || f.model_name.toLowerCase().includes(needle))
        .map((f) => {
          const vs = variants(f);
          const summary = unique(vs.map((v) => [v.format, size(v.size) && `${size(v.size)}B`].filter(Boolean).join(' '))).join(', ');
          const button = h('button', { type: 'button', class: 'secondary small', onclick: () => use(t, f) }, 'Use');
          allow(canStart, 'models:start', button);
          return h('li', { 'data-name': f.model_name },
            h('div', { class: 'item-head' },
              h('strong', {}, f.model_name),
              h('span', { class: f.is_builtin ? 'badge' : 'badge custom' }, f.is_builtin ? 'built-in' : 'custom'),
              button),
            summary ? h('small', { class: 'muted' }, summary) : null,
            f.model_description ? h('small', { class: 'description' }, f.model_description) : null);
        });
      return items.length ? [h('h3', {}, t), h('ul', { class: 'catalogue' }, items)] : [];
    });
    list.replaceChildren(...sections.flat());
    if (!list.firstChild) list.append(h('p', { class: 'muted' }, 'No model matches.'));
  }
  filter.addEventListener('input', drawCatalogue);

  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Launch')),
    h('div', { class: 'columns' },
      form,
      h('section', { class: 'card', id: 'catalogue' }, h('h2', {}, 'Catalogue'), filter, list)),
  );
  updateChoices();

  let stopped = false;
  Promise.all(TYPES.map((t) => api.get(`v1/model_registrations/${t}?detailed=true`, { action: 'listing the catalogue' })))
    .then((results) => {
      if (stopped) return;
      TYPES.forEach((t, i) => { catalogue[t] = results[i] || []; });
      drawCatalogue();
      updateChoices();
    })
    .catch((err) => {
      if (stopped) return;
      list.replaceChildren(h('p', { class: 'muted' }, 'The catalogue is not available.'));
      api.report(err);
    });
  return () => { stopped = true; };
}
