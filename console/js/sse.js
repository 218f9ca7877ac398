// Server-sent events read from a fetch() Response (EventSource cannot POST, and would not let a
// resumed stream be told where to start). Yields {id, data} with `data` parsed as JSON.

const MAX_PENDING = 8 * 1024 * 1024;

function parseBlock(block) {
  let id = null;
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(':')) continue; // comments are heartbeats
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'id') id = value;
    else if (name === 'data') data.push(value);
  }
  if (!data.length) return null;
  return { id, data: JSON.parse(data.join('\n')) };
}

/** The events of `res`, in order, until the stream ends (or its fetch is aborted). */
export async function* sseEvents(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      pending += value;
      if (pending.length > MAX_PENDING) throw new Error('an event was larger than the console accepts');
      for (let m = /\r?\n\r?\n/.exec(pending); m; m = /\r?\n\r?\n/.exec(pending)) {
        const block = pending.slice(0, m.index);
        pending = pending.slice(m.index + m[0].length);
        const ev = parseBlock(block);
        if (ev) yield ev;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
