// Building the page from elements, never from HTML strings: every text a user, a model or the
// server wrote is set as text, so nothing it contains can become markup or script.

/**
 * h('button', {type: 'button', onclick: fn, 'aria-label': 'x'}, 'text', child…)
 * Attributes: `class`, `text`, `on<event>` (a function), `dataset` (an object), booleans
 * (`true` sets the attribute, `false`/null/undefined leaves it out), anything else as a string.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'value' || name === 'checked') el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Appends strings (as text), nodes and arrays of them, skipping null/false. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Removes every child. */
export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

let nextId = 0;
/** A unique element id, for labels. */
export function uid(prefix = 'f') {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled input: returns {row, input}. */
export function field(label, attrs = {}) {
  const id = uid();
  const input = h(attrs.tag ?? 'input', { id, ...attrs, tag: undefined });
  const row = h('div', { class: 'field' }, h('label', { for: id, text: label }), input);
  return { row, input };
}

/** An element with role=alert showing `message` (or nothing when empty). */
export function alertBox() {
  const el = h('p', { class: 'alert', role: 'alert', hidden: true });
  return {
    el,
    show(message) {
      el.textContent = message;
      el.hidden = !message;
    },
    clear() {
      el.textContent = '';
      el.hidden = true;
    },
  };
}

/** A local date and time for an ISO timestamp, or a dash. */
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}
