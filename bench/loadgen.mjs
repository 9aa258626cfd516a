#!/usr/bin/env node
// loadgen.mjs — a load generator for any OpenAI-compatible server (radixserve, llama-server).
//
// It drives streaming /v1/chat/completions with ignore_eos (so every server generates exactly
// max_tokens) and reports output tokens/s, time to first token (p50/p99) and inter-token latency.
// Prompts are deterministic pseudo-English built from a fixed word list and a seeded generator,
// so two servers get byte-identical requests.
//
// Workloads (issue 15):
//   few-shot    a ~1,800-token shared set of examples as the system prompt, 16 different short
//               questions, 32 output tokens each, after one warm-up request
//   multi-turn  16 sessions x 4 turns, each turn sends the whole history back
//   unique      16 prompts of ~1,500 tokens sharing nothing
//
// Usage: node bench/loadgen.mjs --url http://127.0.0.1:8080 --workload few-shot
//            [--concurrency 16] [--requests 16] [--max-tokens 32] [--model NAME] [--label TEXT]
//            [--timeout 1800] [--think-ms 0] [--json] [--dump]
// --think-ms T: a multi-turn session waits T ms after each answer before sending its next turn
// (people read before they reply; a server can use the gap, e.g. radixserve's next-turn
// warming). The wall time, and so tokens/s, then includes that idle time; TTFT of turns >= 2
// (ttft_later_*) is the figure the gap is for.
// Prints one human-readable summary and (with --json) one JSON line with every figure.

import http from 'node:http';

const args = Object.fromEntries(
    process.argv.slice(2).reduce((acc, a, i, all) => {
        if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
        return acc;
    }, []));
const url = (args.url || 'http://127.0.0.1:8080').replace(/\/$/, '');
const workload = args.workload || 'few-shot';
const concurrency = parseInt(args.concurrency || '16', 10);
const nRequests = parseInt(args.requests || '16', 10);
const maxTokens = parseInt(args['max-tokens'] || '32', 10);
const timeoutS = parseFloat(args.timeout || '1800');
const label = args.label || url;
const thinkMs = parseFloat(args['think-ms'] || '0');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- deterministic text
const WORDS = ('the a of and to in is was for on that with as by at from this it be are or an which ' +
    'river mountain teacher garden window market letter engine question answer story number city ' +
    'morning evening summer winter bridge forest ocean village doctor student kitchen station ' +
    'yellow quiet bright heavy simple early careful gentle sudden ancient modern narrow famous ' +
    'walks builds writes reads carries opens follows explains remembers changes measures counts ' +
    'because however although therefore while after before during between without under over').split(' ');

function rng(seed) { // mulberry32
    let s = seed >>> 0;
    return () => {
        s = (s + 0x6d2b79f5) >>> 0;
        let t = s;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

function sentence(r, n) {
    const w = [];
    for (let i = 0; i < n; i++) w.push(WORDS[Math.floor(r() * WORDS.length)]);
    w[0] = w[0][0].toUpperCase() + w[0].slice(1);
    return w.join(' ') + '.';
}

// About `tokens` tokens of text (one common English word with its leading space is about one
// token for byte-level BPE vocabularies; punctuation adds a little).
function text(seed, tokens) {
    const r = rng(seed);
    const out = [];
    let n = 0;
    while (n < tokens) {
        const len = 8 + Math.floor(r() * 10);
        out.push(sentence(r, len));
        n += len + 1;
    }
    return out.join(' ');
}

function fewShotSystem() {
    const r = rng(7);
    const parts = ['You answer questions about short texts. Here are solved examples.'];
    let n = 12;
    for (let i = 1; n < 1800; i++) {
        const ex = `Example ${i}. Text: ${text(1000 + i, 40)} Question: ${sentence(r, 8)} Answer: ${sentence(r, 12)}`;
        parts.push(ex);
        n += 82; // measured: ~82 Qwen3 tokens per example (see --dump)
    }
    return parts.join('\n');
}

// POST a JSON body; resolves with the response stream once headers arrive (no idle time-outs
// but the overall --timeout).
function post(target, payload) {
    return new Promise((resolve, reject) => {
        const req = http.request(target, {
            method: 'POST', agent: false, // a fresh connection per request: no keep-alive reuse races
            headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        }, resolve);
        req.setTimeout(timeoutS * 1000, () => req.destroy(new Error(`no answer within ${timeoutS} s`)));
        req.on('error', reject);
        req.end(payload);
    });
}

// ---------------------------------------------------------------- one streamed request
async function chat(messages, seedForModel) {
    const body = {
        messages, max_tokens: maxTokens, temperature: 0, stream: true, ignore_eos: true,
        stream_options: { include_usage: true },
    };
    if (args.model) body.model = args.model;
    const t0 = performance.now();
    // node:http rather than fetch: fetch gives up when response headers take over 300 s, and a
    // server re-prefilling a long prompt for 16 clients (llama-server's slots) can take longer.
    const res = await post(url + '/v1/chat/completions', JSON.stringify(body));
    if (res.statusCode !== 200) {
        let t = '';
        for await (const piece of res) t += piece;
        throw new Error(`HTTP ${res.statusCode}: ${t}`);
    }
    const dec = new TextDecoder();
    let buf = '', ttft = null, last = null, content = '', chunks = 0, usage = null;
    const gaps = [];
    for await (const piece of res) {
        buf += dec.decode(piece, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
            const ev = buf.slice(0, i);
            buf = buf.slice(i + 2);
            for (const line of ev.split('\n')) {
                if (!line.startsWith('data:')) continue;
                const data = line.slice(5).trim();
                if (data === '[DONE]') continue;
                const j = JSON.parse(data);
                if (j.usage) usage = j.usage;
                const d = j.choices && j.choices[0] && j.choices[0].delta;
                if (d && d.content) {
                    const now = performance.now();
                    if (ttft === null) ttft = now - t0; else gaps.push(now - last);
                    last = now;
                    content += d.content;
                    chunks++;
                }
            }
        }
    }
    const total = performance.now() - t0;
    return {
        ttft: ttft === null ? total : ttft, total, gaps, content,
        completion: usage ? usage.completion_tokens : chunks,
        prompt: usage ? usage.prompt_tokens : null,
        cached: usage && usage.prompt_tokens_details ? usage.prompt_tokens_details.cached_tokens : null,
    };
}

// ---------------------------------------------------------------- workloads
function jobsFor(name) {
    if (name === 'few-shot') {
        const sys = fewShotSystem();
        const q = (i) => [{ role: 'system', content: sys }, { role: 'user', content: `Question ${i}: ${text(50 + i, 20)}` }];
        return { warmup: [q(0)], sessions: Array.from({ length: nRequests }, (_, i) => [q(i + 1)]) };
    }
    if (name === 'unique') {
        return {
            warmup: [], sessions: Array.from({ length: nRequests }, (_, i) => [[
                { role: 'system', content: `Document ${i}.` },
                { role: 'user', content: text(9000 + i, 1500) }]]),
        };
    }
    if (name === 'multi-turn') {
        // Each session is 4 turns; turns are built at run time from the previous answers.
        return { warmup: [], sessions: Array.from({ length: nRequests }, (_, i) => ({ session: i, turns: 4 })) };
    }
    throw new Error('unknown workload ' + name);
}

async function runSession(job, results) {
    if (Array.isArray(job)) {
        for (const messages of job) results.push(await chat(messages));
        return;
    }
    const messages = [{ role: 'system', content: `You are assistant number ${job.session}. ${text(500 + job.session, 150)}` }];
    for (let t = 0; t < job.turns; t++) {
        if (t > 0 && thinkMs > 0) await sleep(thinkMs);
        messages.push({ role: 'user', content: text(20000 + job.session * 10 + t, 120) });
        const r = await chat(messages);
        r.turn = t;
        results.push(r);
        messages.push({ role: 'assistant', content: r.content });
    }
}

function pct(a, p) {
    if (!a.length) return NaN;
    const s = [...a].sort((x, y) => x - y);
    return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))];
}

async function main() {
    const { warmup, sessions } = jobsFor(workload);
    if (args.dump) { // print each first request's message contents as JSON strings (for token counts)
        for (const s of sessions) {
            const msgs = Array.isArray(s) ? s[0] : [{ content: text(500 + s.session, 150) }];
            console.log(JSON.stringify(msgs.map((m) => m.content).join('\n')));
        }
        return;
    }
    for (const m of warmup) await chat(m);
    const results = [];
    const t0 = performance.now();
    let next = 0;
    const worker = async () => {
        while (next < sessions.length) await runSession(sessions[next++], results);
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, sessions.length) }, worker));
    const wall = (performance.now() - t0) / 1000;
    const out = results.reduce((s, r) => s + r.completion, 0);
    const ttft = results.map((r) => r.ttft / 1000);
    const later = results.filter((r) => r.turn > 0).map((r) => r.ttft / 1000);
    const gaps = results.flatMap((r) => r.gaps);
    const summary = {
        label, workload, concurrency, requests: results.length, max_tokens: maxTokens,
        wall_s: +wall.toFixed(2), output_tokens: out, output_tok_s: +(out / wall).toFixed(2),
        ttft_p50_s: +pct(ttft, 50).toFixed(3), ttft_p99_s: +pct(ttft, 99).toFixed(3),
        think_ms: thinkMs,
        ttft_later_p50_s: later.length ? +pct(later, 50).toFixed(3) : null,
        ttft_later_p99_s: later.length ? +pct(later, 99).toFixed(3) : null,
        itl_p50_ms: +pct(gaps, 50).toFixed(1), itl_p99_ms: +pct(gaps, 99).toFixed(1),
        prompt_tokens: results.reduce((s, r) => s + (r.prompt || 0), 0),
        cached_tokens: results.reduce((s, r) => s + (r.cached || 0), 0),
    };
    console.log(`${label} ${workload} c=${concurrency}: ${summary.output_tok_s} out tok/s, ` +
        `TTFT p50 ${summary.ttft_p50_s}s p99 ${summary.ttft_p99_s}s` +
        (later.length ? ` (turns >= 2: p50 ${summary.ttft_later_p50_s}s)` : '') +
        `, ITL p50 ${summary.itl_p50_ms}ms p99 ${summary.itl_p99_ms}ms, ` +
        `prompt ${summary.prompt_tokens} (cached ${summary.cached_tokens}), wall ${summary.wall_s}s`);
    if (args.json) console.log(JSON.stringify(summary));
}

main().catch((e) => { console.error('loadgen:', e.message); process.exit(1); });
