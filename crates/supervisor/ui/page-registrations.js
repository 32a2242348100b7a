// Custom model registrations: list (`GET /v1/model_registrations/{type}`), show, register from
// JSON (`POST`) and unregister (`DELETE`).

import * as api from './api.js';
import * as session from './session.js';
import { allow, deniedHint, field, h, notify, table } from './dom.js';

const TYPES = ['LLM', 'embedding', 'rerank'];

const EXAMPLES = {
  LLM: {
    version: 2,
    model_name: 'my-llm',
    model_family: 'smollm2-instruct',
    model_ability: ['chat'],
    context_length: 8192,
    model_lang: ['en'],
    model_specs: [{ model_format: 'ggufv2', model_size_in_billions: '0_135', quantization: 'Q4_1', model_uri: '/path/to/model.Q4_1.gguf' }],
  },
  embedding: {
    model_name: 'my-embedding',
    dimensions: 384,
    max_tokens: 256,
    language: ['en'],
    model_specs: [{ model_format: 'pytorch', model_uri: '/path/to/model-folder', quantization: 'none' }],
  },
  rerank: {
    model_name: 'my-reranker',
    type: 'normal',
    max_tokens: 512,
    language: ['en'],
    model_specs: [{ model_format: 'pytorch', model_uri: '/path/to/model-folder', quantization: 'none' }],
  },
};

export function render(main) {
  const canRegister = session.can('models:register');
  const canUnregister = session.can('models:unregister');
  const type = h('select', { id: 'reg-type' }, TYPES.map((t) => h('option', { value: t }, t)));
  const list = h('div', { id: 'reg-list' });
  const detail = h('pre', { id: 'reg-detail', class: 'json', hidden: true });
  const json = h('textarea', { id: 'reg-json', rows: 12, spellcheck: 'false', placeholder: 'The model definition as JSON' });
  const persist = h('input', { id: 'reg-persist', type: 'checkbox', checked: true });
  const example = h('button', { type: 'button', id: 'reg-example', class: 'secondary' }, 'Insert example');
  const submit = h('button', { type: 'submit', id: 'reg-submit' }, 'Register');
  allow(canRegister, 'models:register', json, persist, example, submit);
  let stopped = false;

  async function load() {
    detail.hidden = true;
    list.replaceChildren(h('p', { class: 'muted' }, 'Loading\u2026'));
    const modelType = type.value;
    let families;
    try {
      families = await api.get(`v1/model_registrations/${modelType}`, { action: 'listing registrations' });
    } catch (err) {
      if (stopped) return;
      list.replaceChildren(h('p', { class: 'muted' }, 'The registrations are not available.'));
      api.report(err);
      return;
    }
    if (stopped || modelType !== type.value) return;
    const custom = families.filter((f) => !f.is_builtin);
    const builtin = families.length - custom.length;
    const note = h('p', { class: 'muted' }, `${builtin} built-in ${modelType} famil${builtin === 1 ? 'y' : 'ies'} (see Launch).`);
    if (custom.length === 0) {
      list.replaceChildren(h('p', { class: 'empty' }, `No custom ${modelType} model is registered.`), note);
      return;
    }
    const rows = custom.map((f) => {
      const show = h('button', { type: 'button', class: 'secondary small', onclick: () => showOne(modelType, f.model_name) }, 'Show');
      const remove = h('button', { type: 'button', class: 'danger small unregister', 'data-name': f.model_name }, 'Unregister');
      remove.addEventListener('click', () => unregister(modelType, f.model_name, remove));
      allow(canUnregister, 'models:unregister', remove);
      return h('tr', { 'data-name': f.model_name }, h('td', { class: 'mono' }, f.model_name), h('td', { class: 'actions' }, show, remove));
    });
    list.replaceChildren(table(['Name', ''], rows, { id: 'reg-table' }), note);
  }

  async function showOne(modelType, name) {
    try {
      const body = await api.get(`v1/model_registrations/${modelType}/${encodeURIComponent(name)}`, { action: 'reading a registration' });
      detail.textContent = JSON.stringify(body, null, 2);
      detail.hidden = false;
    } catch (err) {
      api.report(err);
    }
  }

  async function unregister(modelType, name, button) {
    button.disabled = true;
    try {
      await api.del(`v1/model_registrations/${modelType}/${encodeURIComponent(name)}`, { action: `unregistering ${name}` });
      notify('ok', `Unregistered ${name}.`);
    } catch (err) {
      api.report(err);
    }
    load();
  }

  async function onSubmit(event) {
    event.preventDefault();
    let model;
    try {
      model = JSON.parse(json.value);
    } catch (err) {
      notify('error', `The definition is not valid JSON: ${err.message}`);
      return;
    }
    submit.disabled = true;
    try {
      await api.post(`v1/model_registrations/${type.value}`,
        { model: JSON.stringify(model), worker_ip: null, persist: persist.checked },
        { action: 'registering a model' });
      notify('ok', `Registered ${model.model_name}.`);
      load();
    } catch (err) {
      api.report(err);
    } finally {
      submit.disabled = !canRegister;
    }
  }

  example.addEventListener('click', () => {
    json.value = JSON.stringify(EXAMPLES[type.value], null, 2);
  });
  type.addEventListener('change', load);

  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Custom registrations'), field('Type', type)),
    h('div', { class: 'columns' },
      h('section', { class: 'card' }, h('h2', {}, 'Registered'), list, detail),
      h('form', { class: 'card', id: 'reg-form', onsubmit: onSubmit },
        h('h2', {}, 'Register'),
        deniedHint(canRegister, 'models:register', 'register models'),
        field('Definition (JSON)', json, 'Upstream Xinference\u2019s custom model format; model_uri is a path on the workers.'),
        h('label', { class: 'check' }, persist, ' Keep after a restart'),
        h('div', { class: 'row' }, submit, example))),
  );
  load();
  return () => { stopped = true; };
}
