// Try-outs for embedding models (`POST /v1/embeddings`, with the inputs' cosine similarities)
// and rerank models (`POST /v1/rerank`).

import * as api from './api.js';
import * as session from './session.js';
import { allow, append, deniedHint, field, h, table } from './dom.js';
import { modelPicker } from './page-chat.js';

function lines(text) {
  return text.split('\n').map((l) => l.trim()).filter(Boolean);
}

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / (Math.sqrt(na) * Math.sqrt(nb) || 1);
}

function embeddingsCard(wanted, canRead) {
  const input = h('textarea', { id: 'embed-input', rows: 4 }, 'A cat sits on the mat.\nA kitten rests on a rug.\nStock prices fell sharply today.');
  const run = h('button', { type: 'submit', id: 'embed-run' }, 'Embed');
  const out = h('div', { id: 'embed-result' });
  const picker = modelPicker('embed-model', 'embedding', wanted, (control, any) => {
    allow(canRead, 'models:read', control);
    if (!any) run.disabled = true;
  });
  allow(canRead, 'models:read', input, run);

  async function onSubmit(event) {
    event.preventDefault();
    const texts = lines(input.value);
    if (texts.length === 0) return;
    run.disabled = true;
    try {
      const res = await api.post('v1/embeddings', { model: picker.value(), input: texts }, { action: 'using a model' });
      const vectors = res.data.map((d) => d.embedding);
      const summary = h('p', {}, `${vectors.length} vectors of ${vectors[0] ? vectors[0].length : 0} dimensions; ${res.usage ? res.usage.total_tokens : '?'} tokens.`);
      const rows = texts.map((t, i) => h('tr', {},
        h('td', {}, t),
        h('td', { class: 'mono' }, `[${vectors[i].slice(0, 4).map((x) => x.toFixed(4)).join(', ')}, \u2026]`)));
      const parts = [summary, table(['Input', 'Embedding'], rows, { id: 'embed-table' })];
      if (texts.length > 1) {
        const simRows = texts.map((t, i) => h('tr', {},
          h('th', { scope: 'row' }, `#${i + 1}`),
          vectors.map((v, j) => h('td', { class: 'num' }, cosine(vectors[i], v).toFixed(3)))));
        parts.push(h('h3', {}, 'Cosine similarity'),
          table(['', ...texts.map((_, i) => `#${i + 1}`)], simRows, { id: 'embed-similarity', class: 'matrix' }));
      }
      out.replaceChildren(...parts);
    } catch (err) {
      api.report(err);
    } finally {
      run.disabled = !canRead;
    }
  }

  return h('form', { class: 'card', id: 'embed-form', onsubmit: onSubmit },
    h('h2', {}, 'Embeddings'),
    h('div', { class: 'field' }, h('label', { for: 'embed-model' }, 'Model'), picker.element),
    field('Inputs (one per line)', input),
    h('div', { class: 'row' }, run),
    out);
}

function rerankCard(wanted, canRead) {
  const query = h('input', { id: 'rerank-query', autocomplete: 'off', value: 'What is the capital of France?' });
  const docs = h('textarea', { id: 'rerank-docs', rows: 4 }, 'Paris is the capital of France.\nBerlin is the capital of Germany.\nThe Eiffel Tower is in Paris.');
  const run = h('button', { type: 'submit', id: 'rerank-run' }, 'Rerank');
  const out = h('div', { id: 'rerank-result' });
  const picker = modelPicker('rerank-model', 'rerank', wanted, (control, any) => {
    allow(canRead, 'models:read', control);
    if (!any) run.disabled = true;
  });
  allow(canRead, 'models:read', query, docs, run);

  async function onSubmit(event) {
    event.preventDefault();
    const documents = lines(docs.value);
    if (!query.value.trim() || documents.length === 0) return;
    run.disabled = true;
    try {
      const res = await api.post('v1/rerank',
        { model: picker.value(), query: query.value.trim(), documents, return_documents: true },
        { action: 'using a model' });
      const rows = res.results.map((r, rank) => h('tr', {},
        h('td', { class: 'num' }, String(rank + 1)),
        h('td', { class: 'num' }, Number(r.relevance_score).toFixed(4)),
        h('td', {}, documents[r.index] ?? '')));
      out.replaceChildren(table(['Rank', 'Score', 'Document'], rows, { id: 'rerank-table' }));
    } catch (err) {
      api.report(err);
    } finally {
      run.disabled = !canRead;
    }
  }

  return h('form', { class: 'card', id: 'rerank-form', onsubmit: onSubmit },
    h('h2', {}, 'Rerank'),
    h('div', { class: 'field' }, h('label', { for: 'rerank-model' }, 'Model'), picker.element),
    field('Query', query),
    field('Documents (one per line)', docs),
    h('div', { class: 'row' }, run),
    out);
}

export function render(main, { params }) {
  const canRead = session.can('models:read');
  const wanted = params.get('model');
  append(main, [
    h('div', { class: 'page-head' }, h('h1', {}, 'Embeddings & rerank')),
    deniedHint(canRead, 'models:read', 'use models'),
    h('div', { class: 'columns' }, embeddingsCard(wanted, canRead), rerankCard(wanted, canRead)),
  ]);
}
