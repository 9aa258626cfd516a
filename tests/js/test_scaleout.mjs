// test_scaleout.mjs — issue 25: three replicas of the embedded model behind HAProxy
// (deploy/haproxy/start.sh, deploy/haproxy/haproxy.cfg), loopback only, bounded (a watchdog
// fails the test after 150 s).
//
//   1. a few-shot workload (4 system prompts, 6 rounds of one request each) on one server
//      alone: the cached-token ratio to match, and vllm:prefix_cache_{hits,queries}_total equal
//      to the responses' usage
//   2. the same workload through HAProxy: every request of one system prompt on one replica
//      (the X-Radixserve-Replica header and the replicas' own request logs agree), the ratio at
//      least 0.9 of one server's, the gateway counters summed over replicas equal to usage;
//      X-Prefix-Key and prompt_cache_key override the body's key
//   3. SIGKILL of a replica with requests in flight: those fail with retriable errors (502, or
//      a stream cut before [DONE], a closed connection) and succeed when sent again, the others
//      complete; requests for its prefixes sent at once
//      succeed (retried on another replica on the refused connection) and, once the health
//      check took it out, land on one other replica each while every other prefix stays put
//   4. a replica's 503 + Retry-After (a full queue) reaches the client unchanged and is not
//      retried on another replica
//   5. start.sh stops everything it started on SIGTERM and on SIGINT, exit 0
// Skips (one SKIP line) when haproxy is not installed (scripts/deps.sh --test installs it).
import fs from 'node:fs';
import path from 'node:path';
import { ok, startServer, runAndFinish } from './server_lib.mjs';
import net from 'node:net';
import { haproxyBin, startDeploy, chat, metric, round, cachedRatio, alive, sleep, SYSTEMS } from './deploy_lib.mjs';

if (!haproxyBin) {
    console.log('ok 1 - # SKIP haproxy is not installed (apt-get install haproxy; scripts/deps.sh --test does)');
    process.exit(0);
}

const ROUNDS = 6;
const ARGS = ['--kv-cache-mb', '16', '--threads', '1'];
const ENV = { RADIXSERVE_TEST_STEP_DELAY_MS: '15' }; // requests last long enough to be killed mid-run
const tmp = fs.mkdtempSync(path.join(process.env.RADIXSERVE_TMP || '/tmp', 'test_scaleout.'));

async function workload(base) {
    const all = [];
    for (let k = 0; k < ROUNDS; k++) {
        const rs = await Promise.all(round(k).map(async (q) => ({ sys: q.sys, ...(await chat(base, q.body)) })));
        all.push(...rs);
    }
    return all;
}

// Whether something still accepts TCP connections on the loopback port.
const accepts = (port) => new Promise((res) => {
    const c = net.connect(port, '127.0.0.1', () => { c.destroy(); res(true); });
    c.on('error', () => res(false));
});
const sum = (rs, f) => rs.reduce((a, r) => a + r[f], 0);
const logCount = (file) => (fs.readFileSync(file, 'utf8').match(/^POST \/v1\/chat\/completions 200 /gm) || []).length;

// The replica each system prompt went to (one name per prompt), or null when one was split.
function placement(rs) {
    const by = SYSTEMS.map(() => new Set());
    for (const r of rs) by[r.sys].add(r.replica);
    return by.every((s) => s.size === 1) ? by.map((s) => [...s][0]) : null;
}

const single = await startServer([], ENV, 150000); // server_lib adds ARGS' two flags itself

await runAndFinish(single, async () => {
    ok(await single.ready(), 'one server alone is ready');
    const one = await workload(single.base);
    const ratio1 = cachedRatio(one);
    ok(one.every((r) => r.status === 200) && ratio1 > 0.5,
        `one server: ${one.length} requests, cached-token ratio ${ratio1.toFixed(3)}`);
    const hits = await metric(single.base, 'vllm:prefix_cache_hits_total');
    const queries = await metric(single.base, 'vllm:prefix_cache_queries_total');
    ok(hits === sum(one, 'cached') && queries === sum(one, 'prompt'),
        `one server: vllm:prefix_cache_hits_total ${hits} / queries_total ${queries} == usage ${sum(one, 'cached')} / ${sum(one, 'prompt')}`);
    single.stop();

    // ---------------------------------------------------------------- 3 replicas, prefix hashing
    const dir = path.join(tmp, 'three');
    const d = await startDeploy(3, ARGS, { env: ENV, dir });
    ok(d.replicas.length === 3 && d.replicas.every((r) => r.pid > 0) && d.haproxyPid > 0,
        `start.sh: 3 replica lines (${d.replicas.map((r) => r.port).join(', ')}), their processes and HAProxy's found`);
    const three = await workload(d.base);
    const ratio3 = cachedRatio(three);
    const where = placement(three);
    ok(three.every((r) => r.status === 200) && where !== null,
        `every request of one system prompt on one replica (${where ? where.join(' ') : three.map((r) => `${r.sys}:${r.replica}`).join(' ')})`);
    const tally = d.replicas.map((r) => three.filter((x) => x.replica === r.name).length);
    // A replica logs a request once its answer is sent: the last lines may trail the answers.
    let logged = [];
    for (let i = 0; i < 100; i++) {
        logged = d.replicas.map((r) => logCount(path.join(dir, `replica-${r.port}.log`)));
        if (logged.join() === tally.join()) break;
        await sleep(30);
    }
    ok(tally.join() === logged.join(), `the replicas' own logs agree: requests per replica ${logged.join(', ')} (headers say ${tally.join(', ')})`);
    ok(ratio3 >= 0.9 * ratio1, `aggregate cached-token ratio ${ratio3.toFixed(3)} >= 0.9 x one server's ${ratio1.toFixed(3)}`);
    let gh = 0, gq = 0;
    for (const r of d.replicas) {
        gh += await metric(r.url, 'vllm:prefix_cache_hits_total');
        gq += await metric(r.url, 'vllm:prefix_cache_queries_total');
    }
    ok(gh === sum(three, 'cached') && gq === sum(three, 'prompt'),
        `gateway counters over the replicas: hits ${gh}, queries ${gq} == usage ${sum(three, 'cached')} / ${sum(three, 'prompt')}`);

    // The explicit keys win over the body: four system prompts, one key, one replica.
    const q = round(ROUNDS);
    const byHeader = await Promise.all(q.map((x) => chat(d.base, x.body, { 'X-Prefix-Key': 'tenant-7' })));
    const byField = await Promise.all(q.map((x) => chat(d.base, { ...x.body, prompt_cache_key: 'tenant-8' })));
    ok(byHeader.every((r) => r.status === 200 && r.replica === byHeader[0].replica) &&
        byField.every((r) => r.status === 200 && r.replica === byField[0].replica),
        `X-Prefix-Key and prompt_cache_key route four system prompts each to one replica (${byHeader[0].replica}, ${byField[0].replica})`);

    // ---------------------------------------------------------------- kill a replica mid-run
    const victim = d.replicas.find((r) => where && where.includes(r.name)); // one that holds prefixes
    const vSys = SYSTEMS.map((_, s) => s).filter((s) => where[s] === victim.name);
    const others = SYSTEMS.map((_, s) => s).filter((s) => where[s] !== victim.name);
    const long = { maxTokens: 200, extra: { ignore_eos: true } };
    const bodies = [...round(ROUNDS + 1, long), ...round(ROUNDS + 2, { ...long, stream: true })];
    const inflight = bodies.map((x) => chat(d.base, x.body).then((r) => ({ sys: x.sys, stream: !!x.body.stream, ...r })));
    let running = 0;
    for (let i = 0; i < 100 && running < 2 * vSys.length; i++) {
        running = await metric(victim.url, 'vllm:num_requests_running');
        if (running < 2 * vSys.length) await sleep(20);
    }
    process.kill(victim.pid, 'SIGKILL');
    for (let i = 0; i < 100 && await accepts(victim.port); i++) await sleep(20); // dead, not dying
    const rightAfter = await Promise.all(vSys.map((s) => chat(d.base, round(ROUNDS + 3)[s].body)));
    const mid = await Promise.all(inflight);
    const vMid = mid.filter((r) => vSys.includes(r.sys)), oMid = mid.filter((r) => others.includes(r.sys));
    const inflightBodies = bodies.filter((x) => vSys.includes(x.sys));
    // Retriable: a 502 (HAProxy: the server closed without an answer), a stream cut before
    // [DONE], or the client connection closed without an answer (HAProxy's way when the request
    // was not the first on a keep-alive connection). A client can send each again (checked below).
    const retriable = (r) => [502, 503, 504].includes(r.status) || (r.stream && r.status === 200 && !r.done) || r.error !== '';
    ok(running >= 2 * vSys.length && vMid.length > 0 && vMid.every(retriable),
        `${victim.name} killed with ${running} requests running: its ${vMid.length} in flight fail retriably (${vMid.map((r) => r.stream ? `stream:${r.done ? 'done' : 'cut'}` : r.status || r.error).join(' ')})`);
    const again = await Promise.all(vMid.map((r, i) => chat(d.base, inflightBodies[i].body)));
    ok(again.every((r) => r.status === 200 && r.done && r.replica !== victim.name),
        `each of those, sent again once (as a retrying client does), succeeds elsewhere (${again.map((r) => `${r.replica}:${r.status}`).join(' ')})`);
    ok(oMid.length > 0 && oMid.every((r) => r.status === 200 && r.done && r.replica !== victim.name),
        `the other ${oMid.length} in flight complete (${oMid.map((r) => `${r.replica}:${r.status}`).join(' ')})`);
    // HAProxy's log field actconn/feconn/beconn/srv_conn/retries: "+N" is N retries, redispatched.
    const redispatched = (fs.readFileSync(path.join(dir, 'haproxy.log'), 'utf8').match(/ \d+\/\d+\/\d+\/\d+\/\+\d /g) || []).length;
    ok(rightAfter.every((r) => r.status === 200 && r.replica !== victim.name),
        `requests for its prefixes sent right after the kill succeed elsewhere (${rightAfter.map((r) => `${r.replica}:${r.status}`).join(' ')}; HAProxy logged ${redispatched} requests retried on another replica)`);
    await sleep(2500); // 2 failed checks at 250 ms (fastinter) to 1 s: out of the ring
    const later = [];
    for (let k = 0; k < 2; k++) {
        const rs = await Promise.all(round(ROUNDS + 4 + k).map(async (x) => ({ sys: x.sys, ...(await chat(d.base, x.body)) })));
        later.push(...rs);
    }
    const after = placement(later);
    ok(later.every((r) => r.status === 200) && after !== null && vSys.every((s) => after[s] !== victim.name),
        `later requests for its prefixes moved, one replica each (${vSys.map((s) => `${s}:${after ? after[s] : '?'}`).join(' ')})`);
    ok(after !== null && others.every((s) => after[s] === where[s]),
        `every other prefix stayed where its cache is (${others.map((s) => `${s}:${after ? after[s] : '?'}`).join(' ')})`);
    const moved = later.filter((r) => vSys.includes(r.sys)).slice(vSys.length); // the second of the two rounds
    ok(moved.every((r) => r.cached > 0), `and is cached again on its new replica (${moved.map((r) => r.cached).join(' ')} tokens)`);

    // ---------------------------------------------------------------- 503 + Retry-After passes
    const d2dir = path.join(tmp, 'two');
    const d2 = await startDeploy(2, [...ARGS, '--max-batch', '1', '--max-queue', '1'],
        { env: { RADIXSERVE_TEST_STEP_DELAY_MS: '30' }, dir: d2dir });
    const burst = await Promise.all([0, 1, 2, 3].map(async (i) => {
        await sleep(i * 60); // in order: one runs, one waits, the rest find the queue full
        return chat(d2.base, { ...round(0, { maxTokens: 30, extra: { ignore_eos: true } })[0].body }, { 'X-Prefix-Key': 'one-replica' });
    }));
    const full = burst.filter((r) => r.status === 503);
    const served = new Set(burst.map((r) => r.replica));
    const idle = d2.replicas.find((r) => !served.has(r.name));
    const idleLog = idle ? fs.readFileSync(path.join(d2dir, `replica-${idle.port}.log`), 'utf8') : 'x';
    ok(full.length > 0 && full.every((r) => r.retryAfter === '1' && r.code === 'queue_full') &&
        burst.every((r) => r.status === 200 || r.status === 503) && served.size === 1 && !/^POST /m.test(idleLog),
        `a full queue's 503 + Retry-After reaches the client, not retried elsewhere (${burst.map((r) => `${r.replica}:${r.status}`).join(' ')})`);

    // ---------------------------------------------------------------- start.sh stops what it started
    const pids2 = [...d2.replicas.map((r) => r.pid), d2.haproxyPid];
    const code2 = await d2.stop('SIGINT');
    const pids = [...d.replicas.map((r) => r.pid), d.haproxyPid];
    const code = await d.stop('SIGTERM');
    await sleep(100);
    ok(code === 0 && code2 === 0 && [...pids, ...pids2].every((p) => !alive(p)),
        `SIGTERM and SIGINT: start.sh exits 0 (${code}, ${code2}), its replicas and HAProxy are gone`);
    if (!process.env.KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});
