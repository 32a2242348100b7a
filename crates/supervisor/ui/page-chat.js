// The chat playground: streams `POST /v1/chat/completions` and shows the answer as it arrives.

import * as api from './api.js';
import * as session from './session.js';
import { allow, deniedHint, field, h } from './dom.js';

/** A model picker of running models of `type` (and `ability`, if given): a select, or a text
 *  field when the list cannot be read (a user may hold models:read without models:list). */
export function modelPicker(id, type, wanted, onReady, ability) {
  const wrap = h('span', { class: 'picker' });
  const fallback = () => h('input', { id, value: wanted || '', placeholder: 'model uid', autocomplete: 'off' });
  let control = h('select', { id, disabled: true }, h('option', {}, 'Loading\u2026'));
  wrap.append(control);
  api.get('v1/models', { action: 'listing models' })
    .then((res) => {
      const fits = (m) => m.model_type === type
        && (!ability || !Array.isArray(m.model_ability) || m.model_ability.includes(ability));
      const uids = (res.data || []).filter(fits).map((m) => m.id);
      if (uids.length === 0) {
        control.replaceWith(control = h('select', { id, disabled: true }, h('option', { value: '' }, `No ${type} model is running`)));
      } else {
        const next = h('select', { id, value: uids.includes(wanted) ? wanted : uids[0] },
          uids.map((u) => h('option', { value: u }, u)));
        control.replaceWith(control = next);
      }
      onReady(control, uids.length > 0);
    })
    .catch((err) => {
      if (err.status !== 403) api.report(err);
      control.replaceWith(control = fallback());
      onReady(control, true);
    });
  return { element: wrap, value: () => control.value.trim() };
}

export function render(main, { params }) {
  const canRead = session.can('models:read');
  const history = [];
  let controller = null;

  const log = h('div', { id: 'chat-log', class: 'chat-log', 'aria-live': 'polite' });
  const input = h('textarea', { id: 'chat-input', rows: 3, placeholder: 'Ask something. Enter sends, Shift+Enter adds a line.' });
  const system = h('input', { id: 'chat-system', autocomplete: 'off', placeholder: 'Optional system prompt' });
  const maxTokens = h('input', { id: 'chat-max-tokens', type: 'number', min: 1, value: 256 });
  const temperature = h('input', { id: 'chat-temperature', type: 'number', min: 0, max: 2, step: 0.1, value: 0.7 });
  const send = h('button', { type: 'submit', id: 'chat-send' }, 'Send');
  const stop = h('button', { type: 'button', id: 'chat-stop', class: 'secondary', disabled: true }, 'Stop');
  const clear = h('button', { type: 'button', id: 'chat-clear', class: 'secondary' }, 'Clear');
  const stats = h('p', { id: 'chat-stats', class: 'muted' });
  const picker = modelPicker('chat-model', 'LLM', params.get('model'), (control, any) => {
    allow(canRead, 'models:read', control);
    if (!any) {
      send.disabled = true;
      log.replaceChildren(h('p', { class: 'empty' }, 'No chat model is running. ', h('a', { href: '#/launch' }, 'Launch one'), '.'));
    }
  }, 'chat');
  allow(canRead, 'models:read', input, system, maxTokens, temperature, send);

  function bubble(role, text) {
    const el = h('div', { class: `msg ${role}` }, h('div', { class: 'role' }, role), h('div', { class: 'content' }, text));
    log.append(el);
    log.scrollTop = log.scrollHeight;
    return el.querySelector('.content');
  }

  async function onSubmit(event) {
    event.preventDefault();
    const text = input.value.trim();
    const model = picker.value();
    if (!text || !model || controller) return;
    if (log.querySelector('.empty')) log.replaceChildren();
    input.value = '';
    history.push({ role: 'user', content: text });
    bubble('user', text);
    const answer = bubble('assistant', '');
    answer.classList.add('streaming');
    const messages = system.value.trim() ? [{ role: 'system', content: system.value.trim() }, ...history] : [...history];
    const body = { model, messages, max_tokens: Number(maxTokens.value) || 256, temperature: Number(temperature.value) };
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    stats.textContent = '';
    const started = performance.now();
    let reply = '';
    let usage = null;
    try {
      for await (const chunk of api.chatStream(body, controller.signal)) {
        const choice = (chunk.choices || [])[0];
        const piece = choice && choice.delta && typeof choice.delta.content === 'string' ? choice.delta.content : '';
        if (piece) {
          reply += piece;
          answer.textContent = reply;
          log.scrollTop = log.scrollHeight;
        }
        if (chunk.usage) usage = chunk.usage;
      }
      const seconds = (performance.now() - started) / 1000;
      if (usage) {
        stats.textContent = `${usage.completion_tokens} tokens in ${seconds.toFixed(1)} s (${(usage.completion_tokens / seconds).toFixed(1)} tokens/s), prompt ${usage.prompt_tokens} tokens`;
      }
    } catch (err) {
      if (err.name === 'AbortError') stats.textContent = 'Stopped.';
      else {
        answer.parentElement.classList.add('failed');
        api.report(err);
      }
    } finally {
      answer.classList.remove('streaming');
      history.push({ role: 'assistant', content: reply });
      controller = null;
      send.disabled = !canRead;
      stop.disabled = true;
    }
  }

  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener('click', () => controller && controller.abort());
  clear.addEventListener('click', () => {
    history.length = 0;
    log.replaceChildren();
    stats.textContent = '';
  });

  const form = h('form', { id: 'chat-form', class: 'card chat', onsubmit: onSubmit },
    deniedHint(canRead, 'models:read', 'chat with models'),
    h('div', { class: 'grid4' },
      h('div', { class: 'field' }, h('label', { for: 'chat-model' }, 'Model'), picker.element),
      field('System prompt', system),
      field('Max tokens', maxTokens),
      field('Temperature', temperature)),
    log,
    input,
    h('div', { class: 'row' }, send, stop, clear, stats));
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Chat')), form);
  input.focus();
  return () => controller && controller.abort();
}
