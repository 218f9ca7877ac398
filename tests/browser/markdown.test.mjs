// Unit tests of the console's markdown parser (console/js/markdown.js), run by Node's test runner
// (`node --test`, from tests/api/console_browser.rs). The parser is pure; the browser test checks
// the elements it becomes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseInline, parseMarkdown, safeUrl } from '../../console/js/markdown.js';

/** The text of inline nodes, with each node's kind: a compact way to compare. */
function flat(nodes) {
  return nodes.map((n) => {
    if (n.t === 'text') return n.v;
    if (n.t === 'br') return '⏎';
    if (n.t === 'code') return `<code>${n.v}</code>`;
    if (n.t === 'link') return `<a ${n.href}>${flat(n.c)}</a>`;
    return `<${n.t}>${flat(n.c)}</${n.t}>`;
  }).join('');
}

test('only absolute http(s) URLs are links', () => {
  assert.equal(safeUrl('https://example.com/a?b=c'), 'https://example.com/a?b=c');
  assert.equal(safeUrl(' HTTP://Example.com '), 'http://example.com/');
  for (const bad of ['javascript:alert(1)', 'JaVaScRiPt:alert(1)', ' javascript:x', 'data:text/html,<b>', 'vbscript:x',
    '//evil.example/x', '/api/v1/api-keys', 'mailto:a@b.c', 'file:///etc/passwd', 'https://', '']) {
    assert.equal(safeUrl(bad), null, bad);
  }
});

test('HTML is text, never markup', () => {
  const src = '<script>alert(1)</script> <img src=x onerror=alert(1)> <a href="javascript:x">y</a>';
  const blocks = parseMarkdown(src);
  assert.deepEqual(blocks, [{ t: 'p', c: [{ t: 'text', v: src }] }]);
});

test('links: safe ones become links, others stay as typed; images never load', () => {
  assert.equal(flat(parseInline('[docs](https://example.com/d "title")')), '<a https://example.com/d>docs</a>');
  assert.equal(flat(parseInline('[x](javascript:alert(1))')), '[x](javascript:alert(1))');
  assert.equal(flat(parseInline('[x](data:text/html;base64,PHNjcmlwdD4=)')), '[x](data:text/html;base64,PHNjcmlwdD4=)');
  assert.equal(flat(parseInline('![cat](https://example.com/cat.png)')), '<a https://example.com/cat.png>cat</a>');
  assert.equal(flat(parseInline('see https://example.com/x.')), 'see <a https://example.com/x>https://example.com/x</a>.');
  assert.equal(flat(parseInline('[**b**](https://e.com)')), '<a https://e.com/><strong>b</strong></a>');
});

test('emphasis, code and escapes', () => {
  assert.equal(flat(parseInline('**bold** *em* _em_ ~~del~~ `a*b*c`')),
    '<strong>bold</strong> <em>em</em> <em>em</em> <del>del</del> <code>a*b*c</code>');
  assert.equal(flat(parseInline('snake_case_name and 2 * 3 * 4')), 'snake_case_name and 2 * 3 * 4');
  assert.equal(flat(parseInline('\\*not em\\* and ``a ` b``')), '*not em* and <code>a ` b</code>');
  assert.equal(flat(parseInline('line one\nline two')), 'line one⏎line two');
  assert.equal(flat(parseInline('**unclosed')), '**unclosed');
});

test('blocks: headings, code, quotes, lists, tables, rules', () => {
  const b = parseMarkdown('# Title\n\n```js\nlet a = "<b>";\n```\n> quoted\n\n- a\n- b\n  - c\n1. x\n2. y\n\n| h1 | h2 |\n|---|:-:|\n| 1 | 2 |\n\n---\ntext');
  assert.deepEqual(b.map((x) => x.t), ['h', 'code', 'quote', 'ul', 'ol', 'table', 'hr', 'p']);
  assert.equal(b[1].v, 'let a = "<b>";');
  assert.equal(b[1].lang, 'js');
  assert.equal(b[3].items.length, 2);
  assert.equal(flat(b[3].items[1].sub[0].items[0].c), 'c');
  assert.equal(b[5].rows[0].length, 2);
});

test('a reply still streaming parses: an unclosed fence runs to the end', () => {
  const b = parseMarkdown('Here:\n```python\nprint(1)');
  assert.deepEqual(b.map((x) => x.t), ['p', 'code']);
  assert.equal(b[1].v, 'print(1)');
});

test('hostile input costs linear time', () => {
  const cases = [('**x ').repeat(30000), ('_x ').repeat(40000), ('~~x ').repeat(30000), '['.repeat(100000),
    ('[a](').repeat(30000), ('`a ').repeat(40000), ('http://a ').repeat(20000), '**' + 'a*'.repeat(50000)];
  for (const src of cases) {
    const started = Date.now();
    parseMarkdown(src);
    const ms = Date.now() - started;
    assert.ok(ms < 3000, `${src.slice(0, 8)}… (${src.length} chars) took ${ms} ms`);
  }
});

test('hostile nesting is bounded', () => {
  const deep = `${'['.repeat(5000)}x${'](https://e.com)'.repeat(5000)}`;
  assert.doesNotThrow(() => parseMarkdown(deep));
  assert.doesNotThrow(() => parseMarkdown('>'.repeat(10000) + ' x'));
  assert.doesNotThrow(() => parseMarkdown('*'.repeat(20000)));
  assert.doesNotThrow(() => parseMarkdown(`${'  '.repeat(2000)}- x\n`.repeat(50)));
});
