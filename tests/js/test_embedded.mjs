// test_embedded.mjs — issue 14 through the real server on the embedded default model: greedy
// /v1/completions of "Once upon a time" is llama2.c's story (streamed and not), and a follow-up
// whose prompt extends that whole answer reports cached_tokens covering most of it.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = process.env.RADIXSERVE_ROOT ||
    path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.resolve(root, process.env.BIN || 'bin/radixserve');
let n = 0, failed = 0;
const ok = (cond, what) => { n++; if (!cond) failed++; console.log(`${cond ? '' : 'not '}ok ${n} - ${what}`); };
const port = await new Promise((res) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
});
const base = `http://127.0.0.1:${port}`;
// Default flags, as `make run` starts it.
const server = spawn(bin, ['serve', '--model', path.join(root, 'models/stories260K'), '--port', String(port)],
    { stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
server.stderr.on('data', (d) => { log += d; });
const stop = () => { try { server.kill('SIGTERM'); } catch { /* gone */ } };
process.on('exit', stop);
setTimeout(() => { console.log('not ok - timed out'); stop(); process.exit(1); }, 120000).unref();

const post = async (route, body) => (await fetch(base + route, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json();

async function streamText(body) {
    const res = await fetch(base + '/v1/completions', { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
    const raw = await res.text();
    let text = '';
    for (const line of raw.split('\n')) {
        if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
        const j = JSON.parse(line.slice(6));
        for (const c of j.choices) text += c.text || '';
    }
    return { text, done: raw.trimEnd().endsWith('data: [DONE]') };
}

let up = false;
for (let i = 0; i < 300 && !up; i++) {
    try { up = (await fetch(base + '/health')).status === 200; } catch { /* not yet */ }
    if (!up) await new Promise((r) => setTimeout(r, 100));
}
ok(up, 'the server comes up with default flags');
if (up) {
    const story = ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.';
    const req = { prompt: 'Once upon a time', max_tokens: 200, temperature: 0 };
    const a = await post('/v1/completions', req);
    const text = a.choices[0].text;
    ok(text.startsWith(story), `greedy completion is llama2.c's story (${JSON.stringify(text.slice(0, 60))})`);
    const s = await streamText(req);
    ok(s.text === text && s.done, 'the streamed completion is the same text and ends with [DONE]');
    const follow = await post('/v1/completions', { prompt: 'Once upon a time' + text + '\nThe next day', max_tokens: 8, temperature: 0 });
    const u = follow.usage;
    const cached = u.prompt_tokens_details.cached_tokens;
    ok(cached >= 0.8 * u.prompt_tokens && cached <= u.prompt_tokens - 1,
        `a follow-up extending the whole answer is mostly cached (${cached} of ${u.prompt_tokens} prompt tokens)`);
}
stop();
console.log(`1..${n}`);
if (failed || !up) console.log('# server log tail: ' + log.slice(-400).replace(/\n/g, '\n# '));
process.exitCode = failed ? 1 : 0;
