// A static OpenAI-compatible upstream for scripts/bench.sh, run by nginx's njs module: every
// request to /v1/chat/completions gets the same streamed reply of 20 tokens, built once when the
// module loads (the bench tool's fake upstream sends the same bytes). Nothing is read from the
// request, so its cost is nginx's own: the floor every row of the reference table stands on.

function chunk(obj) {
    return 'data: ' + JSON.stringify(obj) + '\n\n';
}

function build(n) {
    var out = '';
    for (var i = 0; i < n; i++) {
        var word = i + 1 < n ? 'tok' + i + ' ' : 'tok' + i;
        out += chunk({id: 'b', object: 'chat.completion.chunk', model: 'fake',
                      choices: [{index: 0, delta: {content: word}, finish_reason: null}]});
    }
    out += chunk({id: 'b', object: 'chat.completion.chunk',
                  choices: [{index: 0, delta: {}, finish_reason: 'stop'}]});
    out += chunk({id: 'b', object: 'chat.completion.chunk', choices: [],
                  usage: {prompt_tokens: 10, completion_tokens: n, total_tokens: 10 + n}});
    return out + 'data: [DONE]\n\n';
}

var BODY = build(20);

function completions(r) {
    r.headersOut['Content-Type'] = 'text/event-stream';
    r.headersOut['Cache-Control'] = 'no-cache';
    r.return(200, BODY);
}

export default {completions};
