// sdk_tool_stream.mjs BASE_URL — a helper of tests/test_server_http.c (not a test by itself): the
// official openai SDK streams a chat request whose (fake) model writes two <tool_call> blocks and
// accumulates the delta.tool_calls fragments, once with the SDK's own stream helper
// (chat.completions.stream(...).finalChatCompletion()) and once by hand by `index` as SDK users
// do. Prints one JSON line {helper: {finish, calls}, manual: {finish, calls}} or {error}.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: `${process.argv[2]}/v1`, apiKey: 'unused', maxRetries: 0 });
const req = {
    model: 'fake-model',
    messages: [{ role: 'user', content: 'TWOTOOLS' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
};
const simplify = (calls) => (calls || []).map((c) => ({ id: c.id, type: c.type,
    name: c.function.name, arguments: JSON.parse(c.function.arguments) }));

try {
    const stream = client.chat.completions.stream({ ...req, stream: true });
    const done = await stream.finalChatCompletion();
    const helper = { finish: done.choices[0].finish_reason,
        calls: simplify(done.choices[0].message.tool_calls) };

    const calls = [];
    let finish = null;
    for await (const chunk of await client.chat.completions.create({ ...req, stream: true })) {
        const ch = chunk.choices[0];
        if (!ch) continue;
        if (ch.finish_reason) finish = ch.finish_reason;
        for (const d of ch.delta.tool_calls || []) {
            const c = calls[d.index] ??= { id: '', type: '', function: { name: '', arguments: '' } };
            if (d.id) c.id = d.id;
            if (d.type) c.type = d.type;
            if (d.function?.name) c.function.name += d.function.name;
            if (d.function?.arguments) c.function.arguments += d.function.arguments;
        }
    }
    console.log(JSON.stringify({ helper, manual: { finish, calls: simplify(calls) } }));
} catch (e) {
    console.log(JSON.stringify({ error: String(e) }));
}
