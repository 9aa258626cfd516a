// test_hostile.mjs — the real server (models/stories260K) fed a corpus of hostile requests over
// raw sockets (raw invalid bytes in URLs and bodies, long non-ASCII names cut by a byte limit,
// invalid-UTF-8 stop strings, lone surrogates): every answer is a 4xx whose body is strict
// UTF-8 (WHATWG TextDecoder with fatal: true, independent of the server's own checks) and a JSON
// error object {message, type, param, code}; an invalid-UTF-8 field is a 400 naming it.
// Prints TAP; the server is always stopped.
import net from 'node:net';
import { ok, startServer, runAndFinish } from './server_lib.mjs';

const srv = await startServer(['--served-model-name', 'stories'], {}, 90000);
const port = Number(new URL(srv.base).port);

// One request as raw bytes (Buffer) on a fresh connection; resolves {status, head, body: Buffer}.
function raw(bytes) {
    return new Promise((resolve) => {
        const chunks = [];
        // write, not end: a half-closed socket reads as a client that left (the request is cancelled)
        const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
        s.setTimeout(10000, () => s.destroy());
        s.on('data', (d) => chunks.push(d));
        s.on('error', () => {});
        s.on('close', () => {
            const all = Buffer.concat(chunks);
            const sep = all.indexOf('\r\n\r\n');
            const head = sep < 0 ? all.toString('latin1') : all.subarray(0, sep).toString('latin1');
            const m = /^HTTP\/1\.\d (\d+)/.exec(head);
            resolve({ status: m ? Number(m[1]) : 0, head, body: sep < 0 ? Buffer.alloc(0) : all.subarray(sep + 4) });
        });
    });
}

const b = (s) => Buffer.from(s, 'latin1'); // bytes exactly as written (\xNN escapes)
const u = (s) => Buffer.from(s, 'utf8');
function post(route, body, extra = '') {
    const data = Buffer.isBuffer(body) ? body : u(body);
    return Buffer.concat([b(`POST ${route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Connection: close\r\n${extra}Content-Length: ${data.length}\r\n\r\n`), data]);
}
const get = (url, method = 'GET') => b(`${method} ${url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
const msgs = '"messages":[{"role":"user","content":"hi"}]';
const e300 = 'a' + 'é'.repeat(300); // odd: a byte limit cuts inside a character

// [name, request bytes, expected status, expected param (undefined: not checked)]
const corpus = [
    ['model path of raw invalid bytes', get('/v1/models/%ff%fe'), 404, 'model'],
    ['model path of 300 e-acutes', get('/v1/models/' + encodeURIComponent(e300)), 404], // too long to route: 404 either way
    ['unknown route of invalid bytes', get('/%ff%fe%80/x'), 404],
    ['unknown route, long non-ASCII', get('/' + encodeURIComponent(e300)), 404],
    ['wrong method on a route', get('/v1/models', 'PUT'), 405],
    ['raw invalid bytes in the method and path', b('G\xffT /v1/\xc3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), null],
    ['model name of 300 e-acutes', post('/v1/chat/completions', `{${msgs},"model":"${e300}"}`), 404, 'model'],
    ['model name of raw invalid bytes', post('/v1/chat/completions', Buffer.concat([u(`{${msgs},"model":"`), b('\xff\xfe'), u('"}')])), 400, 'model'],
    ['role of 100 e-acutes', post('/v1/chat/completions', `{"messages":[{"role":"${'a' + 'é'.repeat(100)}","content":"x"}]}`), 400, 'messages[0].role'],
    ['role of raw invalid bytes', post('/v1/chat/completions', b('{"messages":[{"role":"\xc3\x28","content":"x"}]}')), 400, 'messages[0].role'],
    ['content of an overlong slash', post('/v1/chat/completions', b('{"messages":[{"role":"user","content":"\xc0\xaf"}]}')), 400, 'messages[0].content'],
    ['content of an encoded surrogate', post('/v1/chat/completions', b('{"messages":[{"role":"user","content":"\xed\xa0\x80"}]}')), 400, 'messages[0].content'],
    ['a lone surrogate escape', post('/v1/chat/completions', '{"messages":[{"role":"user","content":"\\udc00"}]}'), 400],
    ['stop cut inside a character', post('/v1/chat/completions', Buffer.concat([u(`{${msgs},"stop":"`), b('a\xc3'), u('"}')])), 400, 'stop'],
    ['stop cut inside a character, streamed', post('/v1/chat/completions', Buffer.concat([u(`{${msgs},"stream":true,"stop":"`), b('\xe2\x82'), u('"}')])), 400, 'stop'],
    ['stop array with a bad string', post('/v1/chat/completions', Buffer.concat([u(`{${msgs},"stop":["ok","`), b('\xff'), u('"]}')])), 400, 'stop[1]'],
    ['completions stop invalid', post('/v1/completions', b('{"prompt":"Once","stop":"\xf4\x90\x80\x80"}')), 400, 'stop'],
    ['completions stop invalid, streamed', post('/v1/completions', b('{"prompt":"Once","stream":true,"stop":"\xe0\x80\x80"}')), 400, 'stop'],
    ['completions prompt invalid', post('/v1/completions', b('{"prompt":"\xff once"}')), 400, 'prompt'],
    ['tokenize prompt invalid', post('/tokenize', b('{"prompt":"\x80"}')), 400, 'prompt'],
    ['tokenize role of e-acutes', post('/tokenize', `{"messages":[{"role":"${'a' + 'é'.repeat(100)}","content":"x"}]}`), 400, 'messages[0].role'],
    ['an invalid key', post('/v1/chat/completions', Buffer.concat([u(`{${msgs},"`), b('\xff'), u('":1}')])), 400],
    ['raw invalid bytes outside strings', post('/v1/chat/completions', b('{\xff}')), 400],
    ['response_format type of e-acutes', post('/v1/chat/completions', `{${msgs},"response_format":{"type":"${e300}"}}`), 400, 'response_format.type'],
    ['logit_bias key of e-acutes', post('/v1/chat/completions', `{${msgs},"logit_bias":{"${'a' + 'é'.repeat(60)}":1}}`), 400, 'logit_bias'],
    ['detokenize out-of-range id', post('/detokenize', '{"tokens":[99999999]}'), 400, 'tokens'],
    ['a body over the limit', b('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' +
        'Content-Length: 99999999999\r\n\r\n'), 413],
];

const strict = new TextDecoder('utf-8', { fatal: true });
function errorShape(body) {
    let text;
    try { text = strict.decode(body); } catch { return 'not valid UTF-8'; }
    let j;
    try { j = JSON.parse(text); } catch { return `not JSON: ${text.slice(0, 80)}`; }
    const e = j && j.error;
    if (!e || typeof e.message !== 'string' || typeof e.type !== 'string') return 'no error object';
    if (!(e.param === null || typeof e.param === 'string')) return 'param neither null nor string';
    if (!(e.code === null || typeof e.code === 'string')) return 'code neither null nor string';
    return e;
}

async function main() {
    if (!(await srv.ready())) { ok(false, `server ready (log: ${srv.log().slice(-300)})`); return; }
    for (const [name, req, status, param] of corpus) {
        const r = await raw(req);
        const e = errorShape(r.body);
        const shapeOk = typeof e === 'object';
        const statusOk = status === null ? r.status >= 400 && r.status < 500 : r.status === status;
        const paramOk = param === undefined || (shapeOk && e.param === param);
        ok(shapeOk && statusOk && paramOk,
            `${name}: ${r.status} with a strict UTF-8 JSON error` +
            (shapeOk ? ` (param ${e.param}: ${e.message.slice(0, 70)})` : ` (${e})`));
    }
    // The same checks on a valid multi-byte stop: accepted, and the text stays valid UTF-8.
    const r = await raw(post('/v1/completions', '{"prompt":"Once upon a time","max_tokens":24,"temperature":0,"stop":"é"}'));
    let valid = true;
    try { JSON.parse(strict.decode(r.body)); } catch { valid = false; }
    ok(r.status === 200 && valid, `a valid non-ASCII stop is accepted and the answer is strict UTF-8 (${r.status})`);
}

await runAndFinish(srv, main);
