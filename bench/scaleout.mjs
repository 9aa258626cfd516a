#!/usr/bin/env node
// scaleout.mjs — issue 25's bench: the few-shot workload (4 system prompts) through HAProxy
// (deploy/haproxy/start.sh) over N replicas, once per routing mode, fresh replicas each time:
//
//   one         1 replica behind the same HAProxy: the cached-token ratio one cache gets
//   prefix      N replicas, consistent hashing on the prefix key (haproxy.cfg as shipped)
//   roundrobin  N replicas, RS_HAPROXY_BALANCE=roundrobin: no affinity
//   body-head   N replicas, the key being the body's first 256 bytes (sent as X-Prefix-Key,
//               which HAProxy hashes exactly as it would hash req.body,bytes(0,256))
//
// Each mode sends ROUNDS x 4 chat requests (round-major: round k has one request per system
// prompt, each with its own question) from C concurrent clients, ignore_eos, MAX_TOKENS each,
// and prints the cached-token ratio (Σ cached / Σ prompt tokens), requests/s, completion
// tokens/s, the requests per replica and errors.
//
// Usage: node bench/scaleout.mjs [--model DIR|-] [--replicas 3] [--rounds 8] [--concurrency 8]
//            [--max-tokens 32] [--examples 1] [--modes one,prefix,roundrobin,body-head]
//            [--serve-args="--threads 1 --kv-cache-mb 256"] [--repeat 1] [--json]
// --repeat R runs every mode R times, interleaved, and ends with each mode's medians.
// --examples K repeats the system prompts' three examples K times (stories260K, the default
// model, has a 512-token context: K = 1; a Qwen-tokenizer model takes K = 20 or more).
import { startDeploy, chat, metric, round, systems, cachedRatio } from '../tests/js/deploy_lib.mjs';

// --key value, or --key=value (for a value that starts with "--", as --serve-args' does).
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) acc.push([a.slice(2, eq), a.slice(eq + 1)]);
    else if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
    return acc;
}, []));
const model = args.model || '-';
const replicas = parseInt(args.replicas || '3', 10);
const rounds = parseInt(args.rounds || '8', 10);
const concurrency = parseInt(args.concurrency || '8', 10);
const maxTokens = parseInt(args['max-tokens'] || '32', 10);
const sys = systems(parseInt(args.examples || '1', 10));
const modes = (args.modes || 'one,prefix,roundrobin,body-head').split(',');
const serveArgs = (args['serve-args'] || '--threads 1 --kv-cache-mb 256').split(' ').filter(Boolean);

async function runMode(mode) {
    const n = mode === 'one' ? 1 : replicas;
    const env = { RS_HAPROXY_BALANCE: mode === 'roundrobin' ? 'roundrobin' : 'prefix' };
    const d = await startDeploy(n, serveArgs, { env, model, timeoutMs: 600000 });
    const queue = [];
    for (let k = 0; k < rounds; k++)
        queue.push(...round(k, { maxTokens, sys, extra: { ignore_eos: true } }));
    const results = [];
    const t0 = performance.now();
    await Promise.all(Array.from({ length: concurrency }, async () => {
        for (let q = queue.shift(); q; q = queue.shift()) {
            const headers = mode === 'body-head' ? { 'X-Prefix-Key': JSON.stringify(q.body).slice(0, 256) } : {};
            results.push({ sys: q.sys, ...(await chat(d.base, q.body, headers)) });
        }
    }));
    const secs = (performance.now() - t0) / 1000;
    let preempted = 0;
    for (const r of d.replicas) preempted += await metric(r.url, 'radixserve_preemptions_total');
    await d.stop();
    const good = results.filter((r) => r.status === 200 && r.done);
    const per = d.replicas.map((r) => results.filter((x) => x.replica === r.name).length);
    const split = sys.map((_, s) => new Set(results.filter((r) => r.sys === s).map((r) => r.replica)).size);
    return {
        mode, replicas: n, requests: results.length, errors: results.length - good.length,
        cached_ratio: cachedRatio(good), seconds: secs, req_per_s: good.length / secs,
        completion_tok_per_s: good.reduce((a, r) => a + r.completion, 0) / secs,
        prompt_tokens: good.reduce((a, r) => a + r.prompt, 0), per_replica: per, replicas_per_prompt: split,
        preemptions: preempted,
    };
}

console.log(`scaleout: model ${model === '-' ? 'stories260K (embedded)' : model}, ${replicas} replicas, ` +
    `${rounds} rounds x ${sys.length} prompts, concurrency ${concurrency}, ${maxTokens} tokens each, serve ${serveArgs.join(' ')}`);
console.log('mode        replicas  cached-ratio  req/s   compl-tok/s  per-replica   replicas/prompt  preempt  errors');
const repeat = parseInt(args.repeat || '1', 10);
const runs = Object.fromEntries(modes.map((m) => [m, []]));
for (let rep = 0; rep < repeat; rep++) { // the modes interleaved, so a busy spell hits them all
    for (const mode of modes) {
        const r = await runMode(mode);
        runs[mode].push(r);
        console.log(`${mode.padEnd(11)} ${String(r.replicas).padStart(8)}  ${r.cached_ratio.toFixed(3).padStart(12)}  ` +
            `${r.req_per_s.toFixed(2).padStart(5)}  ${r.completion_tok_per_s.toFixed(1).padStart(11)}  ` +
            `${r.per_replica.join('/').padEnd(12)}  ${r.replicas_per_prompt.join(',').padEnd(15)}  ${String(r.preemptions).padStart(7)}  ${r.errors}`);
        if (args.json) console.log(JSON.stringify({ bench: 'scaleout', model, rounds, concurrency, max_tokens: maxTokens, ...r }));
    }
}
if (repeat > 1) {
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(`median of ${repeat}: mode, cached-ratio, req/s, completion tok/s`);
    for (const m of modes)
        console.log(`  ${m.padEnd(11)} ${median(runs[m].map((r) => r.cached_ratio)).toFixed(3)}  ` +
            `${median(runs[m].map((r) => r.req_per_s)).toFixed(2)}  ${median(runs[m].map((r) => r.completion_tok_per_s)).toFixed(1)}`);
}
