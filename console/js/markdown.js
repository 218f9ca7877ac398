// Markdown for model replies, rendered safely: the text is parsed into a small tree of known node
// types, and the tree is turned into elements whose text is always set as text. No HTML in the
// source is ever interpreted (it shows as typed), links are made only for http(s) URLs, and
// images are never loaded (they become links), so a reply cannot run script, restyle the page or
// make the browser fetch anything.
//
// Supported: paragraphs (single newlines are line breaks), ATX headings, fenced code, block
// quotes, bullet and numbered lists (nested by indentation), GFM tables, rules; inline code,
// **strong**, *emphasis*, ~~strike~~, [links](https://…), bare https:// links, backslash escapes.
//
// parseMarkdown() is pure (the unit tests run it in Node); renderMarkdown() needs a document.

const MAX_DEPTH = 8;
const MAX_LINK = 1024;
const SAFE_URL = /^https?:\/\//i;

/** The URL if it is an absolute http(s) URL, else null. */
export function safeUrl(raw) {
  const s = String(raw ?? '').trim();
  if (!SAFE_URL.test(s)) return null;
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

// ---- inline -------------------------------------------------------------------------------

const ESCAPABLE = '\\`*_{}[]()#+-.!~|<>';

function findClosing(s, delim, from) {
  for (let i = from; i <= s.length - delim.length; i++) {
    if (s[i] === '\\') {
      i++;
      continue;
    }
    if (s.startsWith(delim, i) && s[i - 1] !== ' ' && s[i - 1] !== '\n') return i;
  }
  return -1;
}

/** `[text](url "title")` at `i` (pointing at `[`): {text, url, end} or null. Link texts and
 * URLs are bounded (MAX_LINK), so a reply full of `[` costs linear time, not quadratic. */
function parseLink(s, i) {
  let depth = 0;
  let j = i;
  const stop = Math.min(s.length, i + MAX_LINK);
  for (; j < stop; j++) {
    if (s[j] === '\\') {
      j++;
      continue;
    }
    if (s[j] === '[') depth++;
    else if (s[j] === ']') {
      depth--;
      if (depth === 0) break;
    } else if (s[j] === '\n' && s[j + 1] === '\n') return null;
  }
  if (j >= stop || s[j + 1] !== '(') return null;
  const close = s.slice(j + 2, j + 2 + MAX_LINK).indexOf(')');
  if (close < 0) return null;
  return linkParts(s, i, j, j + 2 + close);
}

function linkParts(s, i, j, close) {
  const inner = s.slice(j + 2, close).trim();
  const url = inner.replace(/\s+("[^"]*"|'[^']*')$/, '').replace(/^<(.*)>$/, '$1');
  if (/\s/.test(url)) return null;
  return { text: s.slice(i + 1, j), url, end: close + 1 };
}

function isWordChar(c) {
  return c !== undefined && /[\p{L}\p{N}]/u.test(c);
}

/** Inline nodes: {t:'text',v} {t:'br'} {t:'code',v} {t:'strong'|'em'|'del',c:[…]} {t:'link',href,c:[…]}. */
export function parseInline(s, depth = 0) {
  const out = [];
  let buf = '';
  // Where a closing delimiter was last looked for and not found: none follows that point either,
  // so no later search for it needs to run (this keeps unclosed `**`, `_`, `~~` linear).
  const missing = new Map();
  const closing = (delim, from) => {
    if (from >= (missing.get(delim) ?? Infinity)) return -1;
    const end = findClosing(s, delim, from);
    if (end < 0) missing.set(delim, from);
    return end;
  };
  const flush = () => {
    if (buf) out.push({ t: 'text', v: buf });
    buf = '';
  };
  const lastLinkMiddle = s.lastIndexOf('](');
  for (let i = 0; i < s.length;) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length && ESCAPABLE.includes(s[i + 1])) {
      buf += s[i + 1];
      i += 2;
      continue;
    }
    if (c === '\n') {
      flush();
      out.push({ t: 'br' });
      i++;
      continue;
    }
    if (c === '`') {
      let n = 1;
      while (s[i + n] === '`') n++;
      const fence = '`'.repeat(n);
      const end = s.indexOf(fence, i + n);
      if (end >= 0) {
        flush();
        const v = s.slice(i + n, end);
        out.push({ t: 'code', v: v.length > 2 && v.startsWith(' ') && v.endsWith(' ') ? v.slice(1, -1) : v });
        i = end + n;
        continue;
      }
      buf += fence;
      i += n;
      continue;
    }
    if ((c === '[' || (c === '!' && s[i + 1] === '[')) && depth < MAX_DEPTH && i < lastLinkMiddle) {
      const image = c === '!';
      const link = parseLink(s, image ? i + 1 : i);
      if (link) {
        const href = safeUrl(link.url);
        if (href) {
          flush();
          // An image is never loaded from elsewhere: it becomes a link to the picture.
          const label = image ? [{ t: 'text', v: link.text || href }] : parseInline(link.text, depth + 1);
          out.push({ t: 'link', href, c: label.length ? label : [{ t: 'text', v: href }] });
          i = link.end;
          continue;
        }
      }
    }
    if ((c === '*' || c === '_' || c === '~') && depth < MAX_DEPTH) {
      const two = s.slice(i, i + 2);
      const double = two === '**' || two === '__' || two === '~~';
      const prev = s[i - 1];
      // `_` only opens at a word boundary, so snake_case stays as typed.
      const canOpen = c !== '_' || !isWordChar(prev);
      if (double && canOpen && s[i + 2] !== undefined && !/\s/.test(s[i + 2])) {
        const end = closing(two, i + 3);
        if (end > 0 && (c !== '_' || !isWordChar(s[end + 2]))) {
          flush();
          out.push({ t: c === '~' ? 'del' : 'strong', c: parseInline(s.slice(i + 2, end), depth + 1) });
          i = end + 2;
          continue;
        }
      } else if (!double && c !== '~' && canOpen && s[i + 1] !== undefined && !/\s/.test(s[i + 1])) {
        const end = closing(c, i + 2);
        if (end > 0 && s[end + 1] !== c && (c !== '_' || !isWordChar(s[end + 1]))) {
          flush();
          out.push({ t: 'em', c: parseInline(s.slice(i + 1, end), depth + 1) });
          i = end + 1;
          continue;
        }
      }
    }
    if ((c === 'h' || c === 'H') && (i === 0 || /[\s(]/.test(s[i - 1]))) {
      const m = /^https?:\/\/[^\s<>"'`]+/i.exec(s.slice(i, i + 2048));
      if (m) {
        const raw = m[0].replace(/[.,;:!?)\]]+$/, '');
        const href = safeUrl(raw);
        if (href) {
          flush();
          out.push({ t: 'link', href, c: [{ t: 'text', v: raw }] });
          i += raw.length;
          continue;
        }
      }
    }
    buf += c;
    i++;
  }
  flush();
  return out;
}

// ---- blocks -------------------------------------------------------------------------------

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function blank(line) {
  return /^\s*$/.test(line);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function cells(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  const out = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && s[i + 1] === '|') {
      cur += '|';
      i++;
    } else if (s[i] === '|') {
      out.push(cur.trim());
      cur = '';
    } else cur += s[i];
  }
  out.push(cur.trim());
  return out;
}

/** Items of a list starting at lines[i]: returns {node, next}. Nested by indentation. */
function parseList(lines, i, depth) {
  const items = [];
  let n = i;
  while (n < lines.length) {
    const line = lines[n];
    const m = ITEM.exec(line);
    if (m) {
      const indent = m[1].replace(/\t/g, '    ').length;
      const ordered = /\d/.test(m[2]);
      // A list of the other kind at the outer level is a new list.
      if (items.length && indent <= items[0].indent && ordered !== items[0].ordered) break;
      items.push({ indent, ordered, start: parseInt(m[2], 10), text: [m[3]] });
      n++;
      continue;
    }
    if (blank(line)) {
      // A blank line continues the list only if another item follows.
      let k = n + 1;
      while (k < lines.length && blank(lines[k])) k++;
      if (k < lines.length && ITEM.test(lines[k])) {
        n = k;
        continue;
      }
      break;
    }
    if (startsBlock(line) && !/^\s{2,}/.test(line)) break;
    items[items.length - 1].text.push(line.trim());
    n++;
  }
  const base = Math.min(...items.map((it) => it.indent));
  return { node: nest(items, 0, depth, base).node, next: n };
}

/** One list from items[from] on, at indentation `indent`; deeper items nest under the previous one. */
function nest(items, from, depth, indent) {
  const first = items[from];
  const list = { t: first.ordered ? 'ol' : 'ul', start: first.ordered ? first.start : undefined, items: [] };
  let i = from;
  while (i < items.length && items[i].indent >= indent) {
    const it = items[i];
    if (it.indent > indent && list.items.length && depth < MAX_DEPTH) {
      const sub = nest(items, i, depth + 1, it.indent);
      list.items[list.items.length - 1].sub.push(sub.node);
      i = sub.next;
      continue;
    }
    list.items.push({ c: parseInline(it.text.join('\n'), depth), sub: [] });
    i++;
  }
  return { node: list, next: i };
}

/**
 * Blocks: {t:'p',c} {t:'h',level,c} {t:'code',lang,v} {t:'quote',c:[blocks]} {t:'ul'|'ol',start,items:[{c,sub}]}
 * {t:'table',head:[cells],rows:[[cells]]} {t:'hr'}; inline content `c` as parseInline returns it.
 */
export function parseMarkdown(src, depth = 0) {
  const lines = String(src ?? '').replace(/\r\n?/g, '\n').split('\n');
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (blank(line)) {
      i++;
      continue;
    }
    let m = FENCE.exec(line);
    if (m) {
      const fence = m[1];
      const body = [];
      i++;
      // An unclosed fence (a reply still streaming) runs to the end.
      while (i < lines.length && !new RegExp(`^ {0,3}${fence[0] === '`' ? '`' : '~'}{${fence.length},}\\s*$`).test(lines[i])) {
        body.push(lines[i]);
        i++;
      }
      i++;
      blocks.push({ t: 'code', lang: m[2] || '', v: body.join('\n') });
      continue;
    }
    m = HEADING.exec(line);
    if (m) {
      blocks.push({ t: 'h', level: m[1].length, c: parseInline(m[2] ?? '', depth) });
      i++;
      continue;
    }
    if (RULE.test(line)) {
      blocks.push({ t: 'hr' });
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && !blank(lines[i]) && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        const q = QUOTE.exec(lines[i]);
        body.push(q ? q[1] : lines[i]);
        i++;
      }
      blocks.push({ t: 'quote', c: depth < MAX_DEPTH ? parseMarkdown(body.join('\n'), depth + 1) : [{ t: 'p', c: [{ t: 'text', v: body.join('\n') }] }] });
      continue;
    }
    if (ITEM.test(line)) {
      const { node, next } = parseList(lines, i, depth);
      blocks.push(node);
      i = next;
      continue;
    }
    if (line.includes('|') && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      const head = cells(line);
      const rows = [];
      i += 2;
      while (i < lines.length && !blank(lines[i]) && lines[i].includes('|')) {
        const r = cells(lines[i]);
        rows.push(head.map((_, k) => r[k] ?? ''));
        i++;
      }
      blocks.push({ t: 'table', head: head.map((x) => parseInline(x, depth)), rows: rows.map((r) => r.map((x) => parseInline(x, depth))) });
      continue;
    }
    const para = [];
    while (i < lines.length && !blank(lines[i]) && (para.length === 0 || !startsBlock(lines[i]))) {
      para.push(lines[i]);
      i++;
    }
    blocks.push({ t: 'p', c: parseInline(para.join('\n'), depth) });
  }
  return blocks;
}

// ---- DOM ----------------------------------------------------------------------------------

function inlineDom(doc, nodes, parent) {
  for (const n of nodes) {
    switch (n.t) {
      case 'text':
        parent.append(doc.createTextNode(n.v));
        break;
      case 'br':
        parent.append(doc.createElement('br'));
        break;
      case 'code': {
        const el = doc.createElement('code');
        el.textContent = n.v;
        parent.append(el);
        break;
      }
      case 'strong':
      case 'em':
      case 'del': {
        const el = doc.createElement(n.t);
        inlineDom(doc, n.c, el);
        parent.append(el);
        break;
      }
      case 'link': {
        const a = doc.createElement('a');
        a.href = n.href;
        a.target = '_blank';
        a.rel = 'noopener noreferrer nofollow';
        inlineDom(doc, n.c, a);
        parent.append(a);
        break;
      }
      default:
        break;
    }
  }
}

function blockDom(doc, blocks, parent) {
  for (const b of blocks) {
    let el;
    switch (b.t) {
      case 'p':
        el = doc.createElement('p');
        inlineDom(doc, b.c, el);
        break;
      case 'h':
        // Headings inside a reply are shown one level below the page's own (h3..h6).
        el = doc.createElement(`h${Math.min(6, b.level + 2)}`);
        inlineDom(doc, b.c, el);
        break;
      case 'code': {
        el = doc.createElement('pre');
        const code = doc.createElement('code');
        if (/^[\w+#.-]{1,32}$/.test(b.lang)) code.className = `language-${b.lang}`;
        code.textContent = b.v;
        el.append(code);
        break;
      }
      case 'quote':
        el = doc.createElement('blockquote');
        blockDom(doc, b.c, el);
        break;
      case 'ul':
      case 'ol':
        el = doc.createElement(b.t);
        if (b.t === 'ol' && Number.isInteger(b.start) && b.start !== 1) el.start = b.start;
        for (const it of b.items) {
          const li = doc.createElement('li');
          inlineDom(doc, it.c, li);
          blockDom(doc, it.sub, li);
          el.append(li);
        }
        break;
      case 'table': {
        el = doc.createElement('table');
        const thead = doc.createElement('thead');
        const tr = doc.createElement('tr');
        for (const cell of b.head) {
          const th = doc.createElement('th');
          inlineDom(doc, cell, th);
          tr.append(th);
        }
        thead.append(tr);
        const tbody = doc.createElement('tbody');
        for (const r of b.rows) {
          const row = doc.createElement('tr');
          for (const cell of r) {
            const td = doc.createElement('td');
            inlineDom(doc, cell, td);
            row.append(td);
          }
          tbody.append(row);
        }
        el.append(thead, tbody);
        break;
      }
      case 'hr':
        el = doc.createElement('hr');
        break;
      default:
        continue;
    }
    parent.append(el);
  }
}

/** A DocumentFragment of `src` rendered as markdown (see the top of this file). */
export function renderMarkdown(src, doc = document) {
  const frag = doc.createDocumentFragment();
  blockDom(doc, parseMarkdown(src), frag);
  return frag;
}
