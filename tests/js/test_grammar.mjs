// test_grammar.mjs — constrained decoding end to end on a tiny random Qwen3 model (written by
// bench/make_model.py, with the real Qwen3 tokenizer): 200 seeded random JSON Schemas (nested
// objects, arrays, enums, const, anyOf, $ref, every string and array bounded so a random model
// must finish), greedy and sampled, each output validated by an independent validator (ajv) with
// finish_reason "stop"; a batch of 8 mixed constrained and free requests equal to their
// one-at-a-time outputs (text and logprobs); streamed == non-streamed; the openai SDK's
// chat.completions.parse() and the AI SDK's generateObject returning objects; tool_choice
// required / named giving a valid call of the right function; an unsupported keyword as a 400
// naming it; max_tokens cutting a value gives "length". Prints TAP; the server is always stopped.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { freePort, tap, waitReady } from './harness.mjs';
import Ajv2020 from 'ajv/dist/2020.js';
import { generateObject, jsonSchema } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';

const root = process.env.RADIXSERVE_ROOT ||
    path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.resolve(root, process.env.BIN || 'bin/radixserve');
const { ok, done } = tap();

if (!fs.existsSync(bin)) {
    console.log(`ok 1 - # SKIP ${bin} not built`);
    process.exit(0);
}
const tmp = fs.mkdtempSync(path.join(process.env.RADIXSERVE_TMP || '/tmp', 'grammar-'));
const model = path.join(tmp, 'tiny-qwen3');
const made = spawnSync('/usr/bin/python3', [path.join(root, 'bench/make_model.py'), '--out', model,
    '--preset', 'tiny-qwen3', '--dtype', 'f32', '--seed', '3'], { stdio: 'ignore' });
if (made.status !== 0) {
    console.log('ok 1 - # SKIP bench/make_model.py could not write the tiny Qwen3 model');
    process.exit(0);
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const server = spawn(bin, ['serve', '--model', model, '--port', String(port), '--kv-cache-mb', '64',
    '--threads', '2', '--max-batch', '16', '--served-model-name', 'tiny'],
{ stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
server.stderr.on('data', (d) => { log += d; });
const stop = () => { try { server.kill('SIGTERM'); } catch { /* gone */ } };
process.on('exit', () => { stop(); fs.rmSync(tmp, { recursive: true, force: true }); });
const slow = ['asan', 'tsan'].includes(process.env.MODE) ? 6 : 1;
const watchdog = setTimeout(() => { console.log('not ok - timed out'); stop(); process.exit(1); },
    600000 * slow);


// ------------------------------------------------------------------ random schemas

function rng(seed) { // mulberry32
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6D2B79F5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

function randomSchema(seed) {
    const r = rng(seed);
    const pick = (a) => a[Math.floor(r() * a.length)];
    const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
    const defs = {};
    let budget = 12; // nodes per schema: keeps the documents a random model writes short
    const leaf = () => {
        const k = pick(['string', 'integer', 'number', 'boolean', 'null', 'enum', 'const']);
        if (k === 'string') {
            const s = { type: 'string', maxLength: int(0, 6) };
            if (r() < 0.3) s.minLength = int(0, s.maxLength);
            return s;
        }
        if (k === 'enum') {
            return { enum: Array.from({ length: int(1, 4) },
                () => pick(['red', 'green', 'a"b', 'x\\y', 'ünï', 1, 10, 2.5, -3, true, null])) };
        }
        if (k === 'const') return { const: pick(['on', 7, false, { k: [1] }]) };
        return { type: k };
    };
    const gen = (depth) => {
        budget--;
        if (depth >= 3 || budget <= 0) return leaf();
        const k = pick(['object', 'object', 'array', 'anyOf', 'ref', 'leaf', 'leaf']);
        if (k === 'object') {
            const props = {};
            const np = int(1, 4);
            for (let i = 0; i < np; i++) props[pick(['a', 'b', 'name', 'x_y', 'k9', 'é', 'q"'] ) + i] = gen(depth + 1);
            const keys = Object.keys(props);
            return { type: 'object', properties: props,
                required: keys.filter(() => r() < 0.6), additionalProperties: false };
        }
        if (k === 'array') {
            const a = { type: 'array', items: gen(depth + 1), maxItems: int(0, 3) };
            if (r() < 0.3) a.minItems = int(0, a.maxItems);
            if (r() < 0.2) { a.prefixItems = [leaf()]; }
            return a;
        }
        if (k === 'anyOf') return { anyOf: [gen(depth + 1), leaf()] };
        if (k === 'ref') {
            const name = `d${Object.keys(defs).length}`;
            defs[name] = null; // reserved: a nested $ref takes the next name
            defs[name] = gen(depth + 1);
            return { $ref: `#/$defs/${name}` };
        }
        return leaf();
    };
    const schema = { type: 'object', properties: { v: gen(1) }, required: ['v'],
        additionalProperties: false };
    if (r() < 0.5) schema.properties.w = gen(1);
    if (Object.keys(defs).length) schema.$defs = defs;
    return schema;
}

// ------------------------------------------------------------------ requests

const messages = [{ role: 'user', content: 'Answer in JSON.' }];
async function chat(body) {
    const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ messages, ...body }) });
    return { status: res.status, body: await res.json() };
}
const format = (schema) => ({ type: 'json_schema', json_schema: { name: 'out', schema, strict: true } });

async function streamed(body) {
    const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages, ...body, stream: true }) });
    const text = await res.text();
    let content = '', finish = null;
    for (const line of text.split('\n')) {
        if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
        const c = JSON.parse(line.slice(6));
        for (const ch of c.choices) {
            content += ch.delta?.content ?? '';
            finish = ch.finish_reason ?? finish;
        }
    }
    return { content, finish };
}

async function main() {
    if (!(await waitReady(base, 300))) { ok(false, `server ready (log: ${log.slice(-300)})`); return; }
    const ajv = new Ajv2020({ strict: false, allErrors: true });

    // 200 random schemas, greedy and sampled, 16 at a time (the server batches them).
    const cases = [];
    const nSchemas = Number(process.env.GRAMMAR_SCHEMAS || 200); // fewer: a quick look only
    for (let i = 0; i < nSchemas; i++) {
        const schema = randomSchema(1000 + i);
        cases.push({ i, schema, body: { response_format: format(schema), max_tokens: 600,
            temperature: 0 } });
        cases.push({ i, schema, body: { response_format: format(schema), max_tokens: 600,
            temperature: 1, seed: i } });
    }
    let valid = 0, stopped = 0, shown = 0, tokens = 0;
    const t0 = Date.now();
    // 16 workers keep the server's batch full (a batch waiting for its longest member would not).
    const outs = new Array(cases.length);
    let next = 0;
    const worker = async () => {
        while (next < cases.length) {
            const k = next++;
            outs[k] = await chat(cases[k].body);
        }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    outs.forEach((o, k) => {
        const c = cases[k];
        const ch = o.body.choices?.[0];
        let good = false;
        try { good = ajv.validate(c.schema, JSON.parse(ch.message.content)); } catch { /* bad */ }
        valid += good;
        tokens += o.body.usage?.completion_tokens ?? 0;
        stopped += ch?.finish_reason === 'stop';
        if ((!good || ch?.finish_reason !== 'stop') && shown++ < 5)
            console.log(`# schema ${c.i} ${JSON.stringify(c.schema)} -> ${o.status} ` +
                `${JSON.stringify(ch ?? o.body)} ${JSON.stringify(ajv.errors)}`.replace(/\n/g, ' '));
    });
    console.log(`# random schemas: ${(Date.now() - t0) / 1000} s, ${tokens} tokens`);
    ok(valid === cases.length, `${nSchemas} random schemas x greedy/sampled: ${valid}/${cases.length} outputs validate under ajv`);
    ok(stopped === cases.length, `... and ${stopped}/${cases.length} finish with "stop"`);

    // A batch of 8 mixed constrained and free requests equals each alone (text and logprobs).
    const mixed = Array.from({ length: 8 }, (_, i) => ({
        ...(i % 2 ? {} : { response_format: i === 4 ? { type: 'json_object' } : format(randomSchema(77 + i)) }),
        max_tokens: i === 4 ? 12 : 40, logprobs: true, top_logprobs: 2,
        ...(i % 4 === 3 ? { temperature: 0.8, seed: i } : { temperature: 0 }),
        messages: [{ role: 'user', content: `request ${i}` }],
    }));
    const alone = [];
    for (const b of mixed) alone.push((await chat(b)).body.choices[0]);
    const together = (await Promise.all(mixed.map((b) => chat(b)))).map((o) => o.body.choices[0]);
    const same = together.filter((c, i) => c.message.content === alone[i].message.content &&
        JSON.stringify(c.logprobs) === JSON.stringify(alone[i].logprobs) &&
        c.finish_reason === alone[i].finish_reason).length;
    ok(same === 8, `batch of 8 mixed constrained and free requests == one at a time (${same}/8)`);
    ok(alone[4].finish_reason === 'length' || (() => { try { return typeof JSON.parse(alone[4].message.content) === 'object'; } catch { return false; } })(),
        `json_object: an object or cut by max_tokens (${alone[4].finish_reason}: ${alone[4].message.content})`);

    // Streamed == non-streamed, also with n = 2 (each choice its own matcher).
    const sb = { response_format: format(randomSchema(5)), max_tokens: 200, temperature: 0 };
    const whole = (await chat(sb)).body.choices[0];
    const st = await streamed(sb);
    ok(st.content === whole.message.content && st.finish === whole.finish_reason,
        `streamed == non-streamed (${st.content})`);
    const two = (await chat({ ...sb, n: 2, temperature: 1, seed: 9 })).body.choices;
    ok(two.length === 2 && two.every((c) => c.finish_reason === 'stop' &&
        ajv.validate(sb.response_format.json_schema.schema, JSON.parse(c.message.content))),
    `n = 2: both choices valid (${two.map((c) => c.message.content).join(' | ')})`);

    // max_tokens cuts a value: "length", and the text is what was generated.
    const cut = (await chat({ response_format: format({ type: 'object', properties: { s: { type: 'string', maxLength: 40 } }, required: ['s'], additionalProperties: false }),
        max_tokens: 3, temperature: 0 })).body.choices[0];
    ok(cut.finish_reason === 'length' && cut.message.content.startsWith('{'),
        `max_tokens cut: "length" with the partial value (${cut.message.content})`);

    // The openai SDK's parse() with a raw JSON schema.
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
    const person = { type: 'object', properties: { name: { type: 'string', maxLength: 8 },
        age: { type: 'integer' }, tags: { type: 'array', items: { enum: ['a', 'b'] }, maxItems: 2 } },
    required: ['name', 'age', 'tags'], additionalProperties: false };
    const parsed = await client.chat.completions.parse({ model: 'tiny', messages, max_tokens: 200,
        temperature: 0, response_format: format(person) });
    const obj = parsed.choices[0].message.parsed;
    ok(obj && typeof obj === 'object' && ajv.validate(person, obj),
        `openai SDK chat.completions.parse() returns a parsed object (${JSON.stringify(obj)})`);

    // The AI SDK's generateObject through the openai-compatible provider (json_schema mode).
    const provider = createOpenAICompatible({ name: 'radixserve', baseURL: `${base}/v1`,
        supportsStructuredOutputs: true });
    const go = await generateObject({ model: provider.chatModel('tiny'), schema: jsonSchema(person),
        prompt: 'A person.', temperature: 0, maxOutputTokens: 200 });
    ok(go.object && ajv.validate(person, go.object),
        `AI SDK generateObject returns an object (${JSON.stringify(go.object)})`);

    // tool_choice required / named: a valid call of the right function.
    const weather = { type: 'object', properties: { city: { type: 'string', maxLength: 10 },
        unit: { enum: ['c', 'f'] } }, required: ['city', 'unit'], additionalProperties: false };
    const clock = { type: 'object', properties: { tz: { type: 'string', maxLength: 5 } },
        required: ['tz'], additionalProperties: false };
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: weather } },
        { type: 'function', function: { name: 'get_time', parameters: clock } }];
    const schemaOf = { get_weather: weather, get_time: clock };
    // One call: it ends with "tool_calls". Parallel calls: a greedy random model may keep
    // writing calls until max_tokens ("length"); every call it finished must still be valid.
    const checkCalls = (ch, name, one) => {
        const calls = ch.message.tool_calls || [];
        return (ch.finish_reason === 'tool_calls' || (!one && ch.finish_reason === 'length')) &&
            calls.length >= 1 && (!one || calls.length === 1) &&
            calls.every((c) => (!name || c.function.name === name) && schemaOf[c.function.name] &&
                ajv.validate(schemaOf[c.function.name], JSON.parse(c.function.arguments)));
    };
    for (const [choice, name, par] of [['required', null, false], ['required', null, true],
        [{ type: 'function', function: { name: 'get_time' } }, 'get_time', true],
        [{ type: 'function', function: { name: 'get_weather' } }, 'get_weather', true]]) {
        for (const temperature of [0, 1]) {
            const ch = (await chat({ tools, tool_choice: choice, parallel_tool_calls: par,
                max_tokens: 300, temperature, seed: 4 })).body.choices[0];
            ok(checkCalls(ch, name, !par || name),
                `tool_choice ${JSON.stringify(choice)} parallel ${par} t=${temperature}: ` +
                `${JSON.stringify(ch.message.tool_calls)} ${ch.finish_reason} '${ch.message.content}'`);
        }
    }
    const none = (await chat({ tools, tool_choice: 'none', max_tokens: 5, temperature: 0 })).body.choices[0];
    ok(!none.message.tool_calls, 'tool_choice none: no tool call');

    // An unsupported keyword is a 400 naming it, through the SDK too.
    const bad = await chat({ response_format: format({ type: 'string', pattern: '^a' }) });
    ok(bad.status === 400 && /'pattern'/.test(bad.body.error.message) &&
        bad.body.error.param === 'response_format.json_schema.schema',
    `unsupported keyword -> 400 naming it (${bad.body.error?.message})`);
    let sdkErr = null;
    try {
        await client.chat.completions.create({ model: 'tiny', messages, response_format: format({
            type: 'object', properties: { a: { type: 'number', minimum: 1 } } }) });
    } catch (e) { sdkErr = e; }
    ok(sdkErr instanceof OpenAI.APIError && sdkErr.status === 400 && /minimum/.test(sdkErr.message),
        `SDK: APIError 400 naming 'minimum' (${sdkErr?.message})`);
    const badTool = await chat({ tools, tool_choice: { type: 'function', function: { name: 'nope' } } });
    ok(badTool.status === 400 && badTool.body.error.param === 'tool_choice.function.name',
        `unknown tool name -> 400 (${badTool.body.error?.message})`);
}

try {
    await main();
} catch (e) {
    ok(false, `threw: ${e.stack || e}`);
}
stop();
const code = await new Promise((res) => {
    if (server.exitCode !== null) return res(server.exitCode);
    server.on('exit', (c) => res(c));
});
// under AddressSanitizer a leaked grammar or matcher makes this non-zero
ok(code === 0, `server exits 0 on SIGTERM (${code}${code ? `: ${log.slice(-400)}` : ''})`);
clearTimeout(watchdog);
process.exit(done());
