// test_client_surface.mjs — issue 24's client surface, driven by the unchanged `openai` SDK
// against the real server (models/stories260K, served under three names): responses.create
// streamed and not (the event sequence, deltas == the whole text, usage.cached_tokens), a
// function tool round trip through previous_response_id (function_call + function_call_output
// items render exactly like the equivalent chat messages: same input token count as /tokenize
// says), embeddings.create float and base64 (the same float32 vectors), completions.create with
// an array prompt and n = 2 (choice index = prompt x n + sample; each prompt answers as it does
// alone; streamed == whole), llama-server's `timings`, every alias route answering as its /v1
// twin, several served names, /tokenize's content + with_pieces, and integers in error texts.
import OpenAI from 'openai';
import { ok, startServer, runAndFinish } from './server_lib.mjs';

const srv = await startServer(['--served-model-name', 'stories260K,tiny, gpt-4o-mini'], {}, 120000);
const base = srv.base;

const post = async (p, body) => {
    const r = await fetch(base + p, { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body) });
    return { status: r.status, json: await r.json() };
};

// A body without what differs per request (ids, times, measured timings).
const stable = (j) => JSON.stringify(j, (k, v) =>
    (['id', 'created', 'created_at', 'timings', 'system_fingerprint'].includes(k) ? undefined : v));

const P = 'Once upon a time, there was a little girl named Lily. She loved to play outside.';

async function responses(client) {
    const req = { model: 'tiny', input: P, instructions: 'Tell a story.', max_output_tokens: 24,
        temperature: 0 };
    const r = await client.responses.create(req);
    ok(r.object === 'response' && r.status === 'incomplete' && r.model === 'tiny' &&
        r.output.length === 1 && r.output[0].type === 'message' && r.output_text.length > 0 &&
        r.incomplete_details?.reason === 'max_output_tokens',
    `responses.create: one message item, output_text (${JSON.stringify(r.output_text)})`);
    ok(r.usage.input_tokens > 16 && r.usage.output_tokens === 24 &&
        r.usage.input_tokens_details.cached_tokens >= 0, `responses usage (${JSON.stringify(r.usage)})`);

    const stream = await client.responses.create({ ...req, stream: true });
    const types = [];
    let text = '', done = null, final = null;
    for await (const ev of stream) {
        types.push(ev.type);
        if (ev.type === 'response.output_text.delta') text += ev.delta;
        if (ev.type === 'response.output_text.done') done = ev.text;
        if (ev.type === 'response.incomplete' || ev.type === 'response.completed') final = ev.response;
    }
    const want = ['response.created', 'response.in_progress', 'response.output_item.added',
        'response.content_part.added'];
    const tail = ['response.output_text.done', 'response.content_part.done',
        'response.output_item.done', 'response.incomplete'];
    ok(want.every((t, i) => types[i] === t) && tail.every((t, i) => types[types.length - 4 + i] === t) &&
        types.slice(4, -4).every((t) => t === 'response.output_text.delta'),
    `responses stream: the event sequence (${[...new Set(types)].join(', ')})`);
    ok(text === r.output_text && done === text && final?.output[0]?.content[0]?.text === text,
        'responses stream: deltas == output_text.done == the non-streamed text');
    ok(final.usage.input_tokens_details.cached_tokens > 0,
        `responses stream: the repeat is served from the prefix cache (${final.usage.input_tokens_details.cached_tokens})`);

    // A stop string ends it: status completed, event response.completed.
    const words = r.output_text.trim().split(' ');
    const s2 = await client.responses.create({ ...req, stream: true, stop: [words[2]] });
    let last = null;
    for await (const ev of s2) last = ev;
    ok(last?.type === 'response.completed' && last.response.status === 'completed',
        `responses stream: stopped early -> response.completed (${last?.type})`);

    // The function tool round trip: the client ran get_weather and continues the stored
    // conversation with the call and its output.
    const tools = [{ type: 'function', name: 'get_weather', description: 'Weather of a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } } } }];
    const first = await client.responses.create({ ...req, instructions: undefined, tools });
    const args = JSON.stringify({ city: 'Paris' });
    const follow = await client.responses.create({ model: 'tiny', previous_response_id: first.id,
        tools, max_output_tokens: 8, temperature: 0,
        input: [{ type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: args },
            { type: 'function_call_output', call_id: 'call_1', output: 'sunny, 21 C' }] });
    const chatMsgs = [{ role: 'user', content: P },
        { role: 'assistant', content: first.output_text, tool_calls: [{ id: 'call_1', type: 'function',
            function: { name: 'get_weather', arguments: args } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'sunny, 21 C' }];
    const tok = await post('/tokenize', { messages: chatMsgs, tools: tools.map((t) => ({ type: 'function',
        function: { name: t.name, description: t.description, parameters: t.parameters } })) });
    ok(follow.status === 'incomplete' && follow.previous_response_id === first.id &&
        follow.usage.input_tokens === tok.json.count,
    `function round trip: previous_response_id + function_call + function_call_output render as the chat messages (${follow.usage.input_tokens} == ${tok.json.count} tokens)`);
    ok(follow.usage.input_tokens_details.cached_tokens > 0,
        `function round trip: the stored conversation's prefix is cached (${follow.usage.input_tokens_details.cached_tokens})`);
    try {
        await client.responses.create({ model: 'tiny', input: 'x', previous_response_id: 'resp_nope' });
        ok(false, 'unknown previous_response_id: expected 404');
    } catch (e) {
        ok(e.status === 404 && e.code === 'previous_response_not_found', `unknown previous_response_id: 404 (${e.message})`);
    }
    const unstored = await client.responses.create({ ...req, store: false, max_output_tokens: 2 });
    try {
        await client.responses.create({ model: 'tiny', input: 'x', previous_response_id: unstored.id });
        ok(false, 'store false: expected 404');
    } catch (e) {
        ok(e.status === 404 && unstored.store === false, 'store: false keeps nothing to continue from');
    }
}

async function embeddings(client) {
    const input = ['Once upon a time', 'Lily loved to play outside in the park.'];
    const f = await client.embeddings.create({ model: 'stories260K', input, encoding_format: 'float' });
    const b = await client.embeddings.create({ model: 'stories260K', input }); // base64 on the wire
    const same = f.data.every((d, i) => d.embedding.length === b.data[i].embedding.length &&
        d.embedding.every((x, k) => Math.fround(x) === b.data[i].embedding[k]));
    ok(f.data.length === 2 && f.data[1].index === 1 && same && f.data[0].embedding.length > 0,
        `embeddings.create: float and base64 give the same float32 vectors (${f.data[0].embedding.length} dims)`);
    const norm = Math.sqrt(f.data[0].embedding.reduce((a, x) => a + x * x, 0));
    ok(Math.abs(norm - 1) < 1e-5 && f.usage.prompt_tokens > 0, `embeddings are unit vectors (${norm})`);
    const d = await client.embeddings.create({ input: input[0], dimensions: 8, encoding_format: 'float' });
    ok(d.data[0].embedding.length === 8, 'embeddings: dimensions 8');
}

async function completions(client) {
    const prompts = ['Once upon a time', 'Lily and Ben'];
    const batch = await client.completions.create({ prompt: prompts, n: 2, max_tokens: 12,
        temperature: 0 });
    const alone = await Promise.all(prompts.map((p) => client.completions.create({ prompt: p,
        max_tokens: 12, temperature: 0 })));
    ok(batch.choices.length === 4 && batch.choices.every((c, i) => c.index === i &&
        c.text === alone[Math.floor(i / 2)].choices[0].text),
    'completions.create: 2 prompts x n=2, choice index = prompt x n + sample, each as alone');
    ok(batch.usage.prompt_tokens === alone[0].usage.prompt_tokens + alone[1].usage.prompt_tokens &&
        batch.usage.completion_tokens === 48, `batch usage sums the prompts (${JSON.stringify(batch.usage)})`);
    const ids = await client.completions.create({ prompt: [[1, 403, 407], [1, 365]], max_tokens: 4,
        temperature: 0, echo: true });
    ok(ids.choices.length === 2 && ids.choices[0].text.startsWith('Once upon') && ids.choices[1].text.startsWith('happ'),
        `token-id array prompts with echo (${JSON.stringify(ids.choices[0].text)})`);
    const st = await client.completions.create({ prompt: prompts, n: 2, max_tokens: 12,
        temperature: 0, stream: true });
    const texts = ['', '', '', ''];
    let timings = null;
    for await (const ch of st) {
        for (const c of ch.choices) texts[c.index] += c.text;
        if (ch.timings) timings = ch.timings;
    }
    ok(texts.every((t, i) => t === batch.choices[i].text), 'array prompt streamed == whole, per index');
    ok(timings && timings.predicted_n === 48 && timings.prompt_n + timings.cache_n ===
        batch.usage.prompt_tokens && timings.predicted_ms > 0 && timings.predicted_per_second > 0,
    `the last stream chunk carries timings (${JSON.stringify(timings)})`);
    const t = batch.timings;
    ok(t && ['prompt_n', 'cache_n', 'predicted_n', 'prompt_ms', 'predicted_ms', 'prompt_per_second',
        'predicted_per_second'].every((k) => typeof t[k] === 'number'), 'a whole response carries timings');
}

async function aliases() {
    const pairs = [
        ['/chat/completions', { messages: [{ role: 'user', content: P }], max_tokens: 8, temperature: 0 }],
        ['/completions', { prompt: P, max_tokens: 8, temperature: 0 }],
        ['/embeddings', { input: P }],
        ['/responses', { input: P, max_output_tokens: 8, temperature: 0 }],
    ];
    for (const [p, body] of pairs) {
        const a = await post(p, body), b = await post('/v1' + p, body);
        ok(a.status === 200 && stable(a.json) === stable(b.json), `${p} answers as /v1${p}`);
    }
    const m1 = await (await fetch(base + '/models')).json();
    const m2 = await (await fetch(base + '/v1/models')).json();
    ok(stable(m1) === stable(m2) && m1.data.map((m) => m.id).join() === 'stories260K,tiny,gpt-4o-mini',
        `/models answers as /v1/models, listing every served name (${m1.data.map((m) => m.id)})`);
    const one = await (await fetch(base + '/models/gpt-4o-mini')).json();
    ok(one.id === 'gpt-4o-mini', '/models/NAME answers as /v1/models/NAME');
    const bad = await post('/chat/completions', { model: 'nope', messages: [{ role: 'user', content: 'x' }] });
    ok(bad.status === 404 && bad.json.error.code === 'model_not_found', 'an unknown model name is a 404');
}

async function tokenizer() {
    const a = await post('/tokenize', { content: 'Once upon', with_pieces: true });
    const b = await post('/tokenize', { prompt: 'Once upon' });
    ok(a.json.tokens.map((t) => t.id).join() === b.json.tokens.join() &&
        a.json.tokens.map((t) => t.piece).join('|') === '<s>| Once| upon',
    `/tokenize content + with_pieces (${JSON.stringify(a.json.tokens)})`);
    const d = await post('/detokenize', { tokens: b.json.tokens });
    ok(d.json.content === d.json.prompt && d.json.content.includes('Once upon'), '/detokenize returns content');
}

async function integers(client) {
    const long = 'Once upon a time '.repeat(200);
    const checks = [
        [() => client.completions.create({ prompt: 'x', max_tokens: 0 }), '2147483647'],
        [() => client.completions.create({ prompt: long, max_tokens: 1 }), '512'],
        [() => client.responses.create({ input: 'x', max_output_tokens: -1 }), '2147483647'],
    ];
    for (const [fn, num] of checks) {
        try { await fn(); ok(false, 'expected a 400'); } catch (e) {
            ok(e.status === 400 && e.message.includes(num) && !/\d\.\d+e[+-]\d/.test(e.message),
                `integers in the error text (${e.message})`);
        }
    }
}

async function main() {
    if (!(await srv.ready())) { ok(false, `server ready (log: ${srv.log().slice(-300)})`); return; }
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
    await responses(client);
    await embeddings(client);
    await completions(client);
    await aliases();
    await tokenizer();
    await integers(client);
}

await runAndFinish(srv, main);
