// Building the page from data. Server text only ever becomes text nodes or attribute values
// (never parsed as markup), and links only point inside the page, so nothing a model, a
// registration or a worker returns can run as script.

/** Creates an element: `props` are attributes (`class`, `for`, ...), `on<event>` listeners,
 *  `value`/`checked` properties; children are nodes, strings or (nested) arrays of them. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  let value;
  for (const [key, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (key.startsWith('on') && typeof v === 'function') {
      el.addEventListener(key.slice(2), v);
    } else if (key === 'value') {
      value = v;
    } else if (key === 'checked') {
      el.checked = Boolean(v);
    } else if (key === 'href' || key === 'src') {
      if (!String(v).startsWith('#')) throw new Error(`refusing a non-local ${key}: ${v}`);
      el.setAttribute(key, v);
    } else {
      el.setAttribute(key, v === true ? '' : String(v));
    }
  }
  append(el, children);
  // After the children, so a <select>'s options exist when its value is set.
  if (value !== undefined) el.value = String(value);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Disables `controls` the user's permissions do not allow, with the reason as tooltip. */
export function allow(allowed, permission, ...controls) {
  for (const control of controls.flat()) {
    if (allowed) continue;
    control.disabled = true;
    control.title = `Requires the ${permission} permission`;
    control.classList.add('denied');
  }
}

/** A button that acts on the second click: the first arms it for a few seconds (no modal
 *  dialog). `props` are its attributes besides the class `danger small`. */
export function confirmButton(label, armedLabel, props, action) {
  const button = h('button', { type: 'button', class: 'danger small', ...props }, label);
  let armed = null;
  button.addEventListener('click', () => {
    if (!armed) {
      button.textContent = armedLabel;
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    action();
  });
  return button;
}

/** A line telling the user why a form is disabled (tooltips are easy to miss). */
export function deniedHint(allowed, permission, what) {
  if (allowed) return null;
  return h('p', { class: 'denied-hint' }, `You cannot ${what}: it requires the ${permission} permission.`);
}

/** Shows a message above the page. Errors stay until closed; others fade after a while. */
export function notify(kind, text, link) {
  const box = document.getElementById('notices');
  const close = h('button', { type: 'button', class: 'close', 'aria-label': 'Close' }, '\u00d7');
  const notice = h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'text' }, text),
    link ? h('a', { href: link.href }, link.label) : null,
    close);
  close.addEventListener('click', () => notice.remove());
  box.append(notice);
  if (kind !== 'error') setTimeout(() => notice.remove(), 8000);
  return notice;
}

export function clearNotices() {
  document.getElementById('notices').replaceChildren();
}

/** A table with a header row; `rows` are arrays of cells (nodes or text). */
export function table(headers, rows, props = {}) {
  return h('table', props,
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows));
}

export function field(label, control, help) {
  return h('div', { class: 'field' },
    h('label', { for: control.id }, label),
    control,
    help ? h('small', { class: 'help' }, help) : null);
}

/** `0_135` (the catalogue's way to write 0.135) for display. */
export function size(value) {
  if (value === undefined || value === null || value === '') return '';
  return String(value).replace('_', '.');
}

export function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function ago(unixSeconds) {
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

/** Parses `#/page?key=value` into the page name and its parameters. */
export function parseHash(hash) {
  const [path, query = ''] = hash.replace(/^#\/?/, '').split('?');
  return { page: path || '', params: new URLSearchParams(query) };
}
