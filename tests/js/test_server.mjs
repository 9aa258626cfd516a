// test_server.mjs — the real server (models/stories260K) driven by unchanged client libraries:
// the official `openai` SDK and the AI SDK's openai-compatible provider (what chat UIs use).
// Chat and completions, streamed and not (include_usage), models, n=2, stop, seeds, logprobs,
// streamed == non-streamed, errors as the SDK's APIError with the right status, cached_tokens on a
// repeat, and a client abort freeing its sequence. Prints TAP; the server is always stopped.
import OpenAI from 'openai';
import { generateText, streamText } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ok, startServer, runAndFinish } from './server_lib.mjs';

// 5 ms after every scheduler step: the aborted request's 510 decode steps then take over
// 2.5 s, so the abort surely lands mid-decode however fast the model is.
const srv = await startServer([], { RADIXSERVE_TEST_STEP_DELAY_MS: '5' }, 90000);
const base = srv.base;

async function metric(name) {
    const text = await (await fetch(`${base}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(name + ' '));
    return line ? Number(line.split(' ')[1]) : NaN;
}

async function main() {
    if (!(await srv.ready())) { ok(false, `server ready (log: ${srv.log().slice(-300)})`); return; }
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
    const story = ', there was a little girl named Lily. She loved to play outside in the park.';

    const models = await client.models.list();
    ok(models.data.length === 1 && models.data[0].id === 'stories260K', 'models.list');

    const comp = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time',
        max_tokens: 40, temperature: 0 });
    ok(comp.choices[0].text.startsWith(story), `completions: known story (${comp.choices[0].text})`);
    ok(comp.usage.prompt_tokens_details.cached_tokens >= 0, 'usage.prompt_tokens_details.cached_tokens');

    const cstream = await client.completions.create({ prompt: 'Once upon a time', max_tokens: 40,
        temperature: 0, stream: true });
    let streamed = '';
    for await (const ch of cstream) streamed += ch.choices[0]?.text ?? '';
    ok(streamed === comp.choices[0].text, 'completions: streamed text == non-streamed text');

    // Longer than one KV block (16 tokens), so its repeat can be served from the prefix cache.
    const P = 'Once upon a time, there was a little girl named Lily. She loved to play outside.';
    const chatReq = { model: 'stories260K', messages: [{ role: 'user', content: P }],
        max_tokens: 30, temperature: 0 };
    const chat = await client.chat.completions.create(chatReq);
    ok(chat.choices[0].message.role === 'assistant' && chat.choices[0].message.content.length > 0,
        `chat: text (${chat.choices[0].message.content.slice(0, 40)})`);
    const stream = await client.chat.completions.create({ ...chatReq, stream: true,
        stream_options: { include_usage: true } });
    let text = '', role = null, finish = null, usage = null, emptyChoices = false;
    for await (const ch of stream) {
        if (ch.usage) { usage = ch.usage; emptyChoices = ch.choices.length === 0; }
        for (const c of ch.choices) {
            role = role ?? c.delta.role;
            text += c.delta.content ?? '';
            finish = c.finish_reason ?? finish;
        }
    }
    ok(text === chat.choices[0].message.content, 'chat: streamed text == non-streamed text');
    ok(role === 'assistant' && finish === 'length', `chat stream: role first, finish_reason (${finish})`);
    ok(usage && emptyChoices && usage.completion_tokens === 30 &&
        usage.prompt_tokens_details.cached_tokens > 0,
        `chat stream: usage chunk with empty choices, cached_tokens on the repeat (${JSON.stringify(usage)})`);

    const two = await client.chat.completions.create({ ...chatReq, n: 2, temperature: 1, seed: 3 });
    ok(two.choices.length === 2 && two.choices[1].index === 1, 'n=2');
    const again = await client.chat.completions.create({ ...chatReq, n: 2, temperature: 1, seed: 3 });
    ok(again.choices[0].message.content === two.choices[0].message.content &&
        again.choices[1].message.content === two.choices[1].message.content, 'seed reproducibility');

    const st = await client.completions.create({ prompt: 'Once upon a time', max_tokens: 40,
        temperature: 0, stop: ['girl'] });
    ok(st.choices[0].text === ', there was a little ' && st.choices[0].finish_reason === 'stop',
        `stop string (${JSON.stringify(st.choices[0].text)})`);

    const lp = await client.chat.completions.create({ ...chatReq, max_tokens: 5, logprobs: true,
        top_logprobs: 3 });
    const content = lp.choices[0].logprobs?.content ?? [];
    ok(content.length === 5 && content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 3 &&
        t.top_logprobs[0].logprob >= t.top_logprobs[2].logprob), 'logprobs + top_logprobs');

    const expectError = async (what, status, fn) => {
        try { await fn(); ok(false, `${what}: expected APIError ${status}`); } catch (e) {
            ok(e instanceof OpenAI.APIError && e.status === status,
                `${what}: APIError ${e.status} (${e.message})`);
        }
    };
    await expectError('unknown model', 404, () => client.chat.completions.create({ ...chatReq,
        model: 'gpt-4o' }));
    await expectError('bad temperature', 400, () => client.chat.completions.create({ ...chatReq,
        temperature: 5 }));
    await expectError('unsupported schema keyword', 400, () => client.chat.completions.create({
        ...chatReq, response_format: { type: 'json_schema', json_schema: { name: 'n',
            schema: { type: 'object', minProperties: 1 } } } }));
    await expectError('prompt over the context', 400, () => client.completions.create({
        prompt: 'Once upon a time '.repeat(200), max_tokens: 4 }));

    // The AI SDK's openai-compatible provider, as chat UIs use it.
    const provider = createOpenAICompatible({ name: 'radixserve', baseURL: `${base}/v1`,
        includeUsage: true });
    const g = await generateText({ model: provider.chatModel('stories260K'), prompt: P,
        maxOutputTokens: 30, temperature: 0 });
    ok(g.text === chat.choices[0].message.content, `AI SDK generateText (${g.text.slice(0, 40)})`);
    const s = streamText({ model: provider.chatModel('stories260K'), prompt: P,
        maxOutputTokens: 30, temperature: 0 });
    let st2 = '';
    for await (const part of s.textStream) st2 += part;
    const u = await s.usage;
    ok(st2 === g.text && u.outputTokens === 30, `AI SDK streamText (${JSON.stringify(u.outputTokens)})`);

    // A client that aborts mid-stream frees its sequence and blocks within a second.
    // (A stream that fails before its fifth chunk on a loaded machine is tried again, twice at
    // most, so the check below is about the abort, not about start-up timing.)
    let steps0 = 0, got = 0, why = '';
    for (let attempt = 0; attempt < 3 && got < 5; attempt++) {
        steps0 = await metric('radixserve_steps_total');
        const ac = new AbortController();
        got = 0;
        try {
            const long = await client.completions.create({ prompt: 'Once', max_tokens: 100000, n: 16,
                ignore_eos: true, stream: true }, { signal: ac.signal });
            for await (const ch of long) { if (++got === 5) ac.abort(); void ch; }
        } catch (e) { why = String(e && e.message); /* the abort, or a failure before it */ }
    }
    if (got < 5) console.log(`# the long stream never reached 5 chunks: ${why}`);
    let running = NaN, pinned = NaN;
    const t0 = Date.now();
    while (Date.now() - t0 < 1000) {
        running = await metric('radixserve_running_sequences');
        pinned = await metric('radixserve_kv_blocks{state="pinned"}');
        if (running === 0 && pinned === 0) break;
        await new Promise((r) => setTimeout(r, 50));
    }
    const left = await metric('radixserve_requests_total{status="499"}');
    const steps = (await metric('radixserve_steps_total')) - steps0;
    ok(steps >= 1 && steps < 510, `abort seen mid-decode: ${steps} of the 510 steps it needs ran`);
    ok(running === 0 && pinned === 0 && left === 1,
        `abort mid-stream: running=${running} pinned=${pinned} after ${Date.now() - t0} ms, 499s=${left}`);
}

await runAndFinish(srv, main);
