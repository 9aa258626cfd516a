// deploy_lib.mjs — what the scale-out test (tests/js/test_scaleout.mjs) and bench
// (bench/scaleout.mjs) share; not a test itself: deploy/haproxy/start.sh run as a child (its
// replicas found by their --port among its children), one chat request that reports which
// replica answered and how it ended, /metrics samples, and the few-shot workload.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = process.env.RADIXSERVE_ROOT ||
    path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const haproxyBin = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((p) => fs.existsSync(p));
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const freePort = () => new Promise((res) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
});

// The processes whose parent is pid (from /proc: no tool needed), with their command lines.
function children(pid) {
    const out = [];
    for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
            const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
            const ppid = parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1], 10);
            if (ppid !== pid) continue;
            const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
            out.push({ pid: parseInt(d, 10), argv });
        } catch { /* gone meanwhile */ }
    }
    return out;
}

export const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

// deploy/haproxy/start.sh N PORT MODEL ...args (MODEL '-': the embedded stories260K), until it
// has printed its N replica lines.
// Returns {base, port, dir, proc, replicas: [{name: 'r1', url, port, pid}], haproxyPid,
// stop(signal) -> exit code}; throws when start.sh ends or times out first.
export async function startDeploy(n, args, { env = {}, dir, model = '-', timeoutMs = 60000 } = {}) {
    const port = await freePort();
    const proc = spawn('bash', [path.join(root, 'deploy/haproxy/start.sh'), String(n), String(port), model, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, RADIXSERVE_BIN: path.resolve(root, process.env.BIN || 'bin/radixserve'), ...(dir ? { RS_DEPLOY_DIR: dir } : {}), ...env },
    });
    let out = '', err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; });
    const exited = new Promise((res) => proc.on('exit', (code, sig) => res(code ?? sig)));
    const onExit = () => { try { proc.kill('SIGTERM'); } catch { /* gone */ } };
    process.on('exit', onExit); // never leave it running
    const t0 = Date.now();
    while ((out.match(/^replica /gm) || []).length < n) {
        if (proc.exitCode !== null || Date.now() - t0 > timeoutMs)
            throw new Error(`start.sh did not come up (exit ${proc.exitCode}): ${err.trim()}`);
        await sleep(50);
    }
    const kids = children(proc.pid);
    const replicas = out.trim().split('\n').filter((l) => l.startsWith('replica ')).map((l, i) => {
        const url = l.slice('replica '.length).trim();
        const p = new URL(url).port;
        const kid = kids.find((k) => k.argv.includes('--port') && k.argv[k.argv.indexOf('--port') + 1] === p);
        return { name: `r${i + 1}`, url, port: parseInt(p, 10), pid: kid ? kid.pid : 0 };
    });
    const hp = kids.find((k) => path.basename(k.argv[0]) === 'haproxy');
    const stop = async (signal = 'SIGTERM') => {
        proc.kill(signal);
        process.removeListener('exit', onExit);
        return exited;
    };
    return { base: `http://127.0.0.1:${port}`, port, dir, proc, replicas, haproxyPid: hp ? hp.pid : 0, stop, stderr: () => err };
}

// One /v1/chat/completions request. Returns {status, replica, cached, prompt, completion, done,
// error, retryAfter, code}: done is true for a complete answer (a stream that reached [DONE]),
// error the network error's text or the error object's code.
export async function chat(base, body, headers = {}) {
    const r = { status: 0, replica: '', cached: 0, prompt: 0, completion: 0, done: false, error: '', retryAfter: null, code: '' };
    try {
        const res = await fetch(`${base}/v1/chat/completions`, {
            method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body),
        });
        r.status = res.status;
        r.replica = res.headers.get('x-radixserve-replica') || '';
        r.retryAfter = res.headers.get('retry-after');
        const text = await res.text();
        if (res.status !== 200) {
            try { r.code = JSON.parse(text).error.code; } catch { r.code = text.slice(0, 60); }
            return r;
        }
        if (!body.stream) {
            const j = JSON.parse(text);
            Object.assign(r, usageOf(j.usage), { done: true });
            return r;
        }
        for (const line of text.split('\n')) {
            if (line === 'data: [DONE]') r.done = true;
            else if (line.startsWith('data: ')) {
                const j = JSON.parse(line.slice(6));
                if (j.usage) Object.assign(r, usageOf(j.usage));
            }
        }
    } catch (e) {
        r.error = String(e.cause?.code || e.message);
    }
    return r;
}

const usageOf = (u) => ({ cached: u.prompt_tokens_details?.cached_tokens ?? 0, prompt: u.prompt_tokens, completion: u.completion_tokens });

// A sample of url's /metrics (a name without labels), or NaN.
export async function metric(url, name) {
    try {
        const text = await (await fetch(`${url}/metrics`)).text();
        const line = text.split('\n').find((l) => l.startsWith(`${name} `));
        return line ? parseFloat(line.split(' ')[1]) : NaN;
    } catch { return NaN; }
}

// ---------------------------------------------------------------- the few-shot workload

// Four system prompts, each a few worked examples (TinyStories words, so the embedded
// stories260K model reads them as text), of 150-200 tokens: the shared prefix the cache keeps.
const TOPICS = [
    ['a little dog', 'the park', 'a red ball', 'happy'],
    ['a small girl', 'the garden', 'a big flower', 'proud'],
    ['an old cat', 'the house', 'a warm bed', 'sleepy'],
    ['a brave boy', 'the forest', 'a tall tree', 'excited'],
];
// systems(k): the same with k rounds of the three examples (a longer shared prefix, for a model
// with a longer context than stories260K's 512 tokens).
export const systems = (k = 1) => TOPICS.map(([who, where, what, feel], i) =>
    `You tell short stories. Story set ${i + 1}.\n` +
    Array.from({ length: k }, (_, j) =>
        `Example ${3 * j + 1}: Once upon a time, ${who} went to ${where}. There was ${what}. It was ${feel}.\n` +
        `Example ${3 * j + 2}: One day, ${who} saw ${what} in ${where}. They played all day and were ${feel}.\n` +
        `Example ${3 * j + 3}: ${who} wanted ${what}, so they looked in ${where}. At last they found it.\n`).join('') +
    'Now tell a new story.');
export const SYSTEMS = systems(1);

const ASKS = ['a story about a bird', 'a story about the sun', 'a story about a boat', 'a story about a cake',
    'a story about the rain', 'a story about a friend', 'a story about a toy', 'a story about the moon',
    'a story about a fish', 'a story about a car', 'a story about the sea', 'a story about a hat'];

// Round k (0-based) of the workload: one request per system prompt, each with its own question.
export function round(k, { maxTokens = 16, stream = false, extra = {}, sys: list = SYSTEMS } = {}) {
    return list.map((sys, s) => ({
        sys: s,
        body: {
            messages: [{ role: 'system', content: sys }, { role: 'user', content: `Tell ${ASKS[(k * 5 + s * 3) % ASKS.length]}, number ${k}.` }],
            max_tokens: maxTokens, temperature: 0, stream, ...(stream ? { stream_options: { include_usage: true } } : {}), ...extra,
        },
    }));
}

// Σ cached / Σ prompt tokens over results.
export const cachedRatio = (rs) => rs.reduce((a, r) => a + r.cached, 0) / Math.max(1, rs.reduce((a, r) => a + r.prompt, 0));
