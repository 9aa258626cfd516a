// chat.js — the chat page: conversations kept in localStorage, answers streamed from
// /v1/chat/completions (fetch + SSE), rendered as Markdown (marked) sanitised by DOMPurify.
// Stop aborts the fetch; the server sees the connection close and cancels the request.
import { $, api, el, errorText, store } from './common.js';

/* global marked, DOMPurify */

const state = {
    convs: store.get('convs', []), // [{id, title, system, messages, updated}], newest first
    current: store.get('current', null), // id of the conversation shown
    settings: store.get('settings', { system: '', temperature: '', top_p: '', max_tokens: '', thinking: true }),
    model: null, // served model id (from /v1/models)
    gen: null, // the answer being streamed: {conv, msg, controller}
};

// ------------------------------------------------------------------ Markdown, sanitised

marked.setOptions({ gfm: true, breaks: true });
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer');
    }
});
// No styles (the page's CSP forbids inline ones) and no images (nothing loads from elsewhere).
const PURIFY = { FORBID_TAGS: ['style', 'img', 'form', 'input', 'button', 'textarea', 'select'], FORBID_ATTR: ['style'] };

function copyText(text, button) {
    const done = () => {
        button.textContent = 'Copied';
        setTimeout(() => { button.textContent = 'Copy'; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, () => { button.textContent = 'Copy failed'; });
    } else {
        button.textContent = 'Copy failed';
    }
}

function renderMarkdown(target, text) {
    target.innerHTML = DOMPurify.sanitize(marked.parse(text), PURIFY);
    for (const pre of target.querySelectorAll('pre')) {
        const code = pre.querySelector('code') || pre;
        const b = el('button', 'copy', 'Copy');
        b.type = 'button';
        b.addEventListener('click', () => copyText(code.textContent, b));
        pre.classList.add('has-copy');
        pre.prepend(b);
    }
}

// ------------------------------------------------------------------ conversations

const newId = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
const currentConv = () => state.convs.find((c) => c.id === state.current);

function save() {
    store.set('convs', state.convs);
    store.set('current', state.current);
    store.set('settings', state.settings);
}

function newConv() {
    const c = { id: newId(), title: 'New chat', system: state.settings.system, messages: [], updated: Date.now() };
    state.convs.unshift(c);
    state.current = c.id;
    save();
    return c;
}

function touch(conv) {
    conv.updated = Date.now();
    const first = conv.messages.find((m) => m.role === 'user');
    conv.title = first ? first.content.slice(0, 60) : 'New chat';
    state.convs.sort((a, b) => b.updated - a.updated);
}

function renderConvList() {
    const list = $('conv-list');
    list.replaceChildren();
    for (const c of state.convs) {
        const li = el('li', c.id === state.current ? 'conv active' : 'conv');
        const open = el('button', 'conv-open', c.title || 'New chat');
        open.type = 'button';
        open.title = c.title;
        open.addEventListener('click', () => {
            state.current = c.id;
            save();
            showConv();
            document.body.classList.remove('side-open');
        });
        const del = el('button', 'conv-del icon', '\u00d7');
        del.type = 'button';
        del.title = 'Delete this conversation';
        del.setAttribute('aria-label', 'Delete conversation');
        del.addEventListener('click', () => {
            if (state.gen && state.gen.conv === c) state.gen.controller.abort();
            state.convs = state.convs.filter((x) => x !== c);
            if (state.current === c.id) state.current = state.convs.length ? state.convs[0].id : null;
            save();
            showConv();
        });
        li.append(open, del);
        list.append(li);
    }
}

// ------------------------------------------------------------------ messages

function statsLine(s) {
    const box = el('div', 'stats');
    const add = (k, label, value) => {
        const span = el('span', 'stat', `${label} ${value}`);
        span.dataset.stat = k;
        span.dataset.value = String(value);
        box.append(span);
    };
    add('prompt', 'prompt', s.prompt);
    add('cached', 'cached', s.cached);
    add('completion', 'completion', s.completion);
    if (s.ttft_ms !== null) add('ttft', 'TTFT', `${Math.round(s.ttft_ms)} ms`);
    if (s.tps !== null) add('tps', 'tok/s', s.tps.toFixed(1));
    return box;
}

function button(label, title, fn) {
    const b = el('button', 'tool', label);
    b.type = 'button';
    b.title = title;
    b.addEventListener('click', fn);
    return b;
}

// Reasoning the user opened or closed stays so while the answer streams on.
const reasoningOpen = new WeakMap();

// The content of one message (used again for every streamed update of an answer).
function fillMessage(box, conv, msg, idx) {
    box.replaceChildren();
    box.className = `msg ${msg.role}${msg.error ? ' error' : ''}${msg.pending ? ' pending' : ''}`;
    if (msg.reasoning) {
        const d = el('details', 'reasoning');
        d.open = reasoningOpen.has(msg) ? reasoningOpen.get(msg) : Boolean(msg.pending && !msg.content);
        const sum = el('summary', null, msg.pending && !msg.content ? 'Thinking\u2026' : 'Reasoning');
        sum.addEventListener('click', () => reasoningOpen.set(msg, !d.open)); // before it toggles
        d.append(sum);
        d.append(el('div', 'reasoning-text', msg.reasoning));
        box.append(d);
    }
    const content = el('div', 'content');
    if (msg.role === 'user') content.textContent = msg.content;
    else renderMarkdown(content, msg.content);
    box.append(content);
    if (msg.error) box.append(el('div', 'error-text', msg.error));
    if (msg.stopped) box.append(el('div', 'note', 'stopped'));
    if (msg.stats) box.append(statsLine(msg.stats));
    if (msg.pending) return;
    const tools = el('div', 'tools');
    if (msg.role === 'user') tools.append(button('Edit', 'Edit and send again', () => editMessage(box, conv, idx)));
    if (msg.role === 'assistant') {
        tools.append(button('Copy', 'Copy the answer', (ev) => copyText(msg.content, ev.currentTarget)));
        if (idx === conv.messages.length - 1 && !state.gen)
            tools.append(button('Regenerate', 'Answer again', () => regenerate(conv)));
    }
    box.append(tools);
}

function showConv() {
    renderConvList();
    const conv = currentConv();
    const list = $('messages');
    list.replaceChildren();
    $('system').value = conv ? conv.system : state.settings.system;
    if (!conv || conv.messages.length === 0) {
        list.append(el('p', 'empty', state.model ? `Ask ${state.model} something.` : 'Ask something.'));
        return;
    }
    conv.messages.forEach((m, i) => {
        const box = el('div');
        box.dataset.idx = String(i);
        fillMessage(box, conv, m, i);
        list.append(box);
    });
    list.scrollTop = list.scrollHeight;
}

function editMessage(box, conv, idx) {
    if (state.gen) return;
    const ta = el('textarea', 'edit');
    ta.value = conv.messages[idx].content;
    ta.rows = Math.min(10, ta.value.split('\n').length + 1);
    const send = button('Send', 'Replace this message and answer again', () => {
        const text = ta.value.trim();
        if (!text) return;
        conv.messages = conv.messages.slice(0, idx);
        conv.messages.push({ role: 'user', content: text });
        generate(conv);
    });
    const cancel = button('Cancel', 'Keep the message as it was', () => showConv());
    const tools = el('div', 'tools');
    tools.append(send, cancel);
    box.replaceChildren(ta, tools);
    ta.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            send.click();
        }
    });
    ta.focus();
}

function regenerate(conv) {
    if (state.gen) return;
    const last = conv.messages[conv.messages.length - 1];
    if (last && last.role === 'assistant') conv.messages.pop();
    generate(conv);
}

// ------------------------------------------------------------------ streaming

function numberSetting(id) {
    const v = $(id).value.trim();
    return v === '' ? undefined : Number(v);
}

function requestBody(conv) {
    const messages = [];
    if (conv.system.trim()) messages.push({ role: 'system', content: conv.system });
    for (const m of conv.messages) if (!m.error || m.content) messages.push({ role: m.role, content: m.content });
    const body = {
        model: state.model || undefined,
        messages,
        stream: true,
        stream_options: { include_usage: true },
        chat_template_kwargs: { enable_thinking: $('thinking').checked },
    };
    for (const k of ['temperature', 'top_p', 'max_tokens']) {
        const v = numberSetting(k);
        if (v !== undefined && Number.isFinite(v)) body[k] = v;
    }
    return body;
}

// The data payloads of an SSE response body, as they arrive.
async function* sseData(response) {
    const reader = response.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
            const event = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
            if (data) yield data;
        }
    }
}

function setBusy(busy) {
    $('send').hidden = busy;
    $('stop').hidden = !busy;
}

// One update of the streamed answer per animation frame, however many chunks arrived.
function scheduleRender(gen) {
    if (gen.frame) return;
    gen.frame = requestAnimationFrame(() => {
        gen.frame = 0;
        const box = document.querySelector(`#messages [data-idx="${gen.idx}"]`);
        if (box && state.current === gen.conv.id) {
            const list = $('messages');
            const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
            fillMessage(box, gen.conv, gen.msg, gen.idx);
            if (atEnd) list.scrollTop = list.scrollHeight;
        }
    });
}

async function generate(conv) {
    const msg = { role: 'assistant', content: '', reasoning: '', pending: true };
    const body = requestBody(conv);
    conv.messages.push(msg);
    touch(conv);
    const gen = { conv, msg, idx: conv.messages.length - 1, controller: new AbortController(), frame: 0 };
    state.gen = gen;
    setBusy(true);
    save();
    showConv();
    const t0 = performance.now();
    let tFirst = null, tLast = null, usage = null;
    try {
        const r = await api('/v1/chat/completions', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(body),
            signal: gen.controller.signal,
        });
        if (!r.ok) throw new Error(await errorText(r));
        for await (const data of sseData(r)) {
            if (data === '[DONE]') break;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new Error(chunk.error.message || 'the server reported an error');
            if (chunk.usage) usage = chunk.usage;
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (!delta) continue;
            const piece = (delta.content || '') + (delta.reasoning_content || '');
            if (!piece) continue;
            tLast = performance.now();
            if (tFirst === null) tFirst = tLast;
            msg.content += delta.content || '';
            msg.reasoning += delta.reasoning_content || '';
            scheduleRender(gen);
        }
    } catch (e) {
        if (e.name === 'AbortError') msg.stopped = true;
        else msg.error = String(e.message || e);
    }
    if (gen.frame) cancelAnimationFrame(gen.frame);
    delete msg.pending;
    if (!msg.reasoning) delete msg.reasoning;
    if (usage) {
        const n = usage.completion_tokens;
        msg.stats = {
            prompt: usage.prompt_tokens,
            cached: (usage.prompt_tokens_details && usage.prompt_tokens_details.cached_tokens) || 0,
            completion: n,
            ttft_ms: tFirst === null ? null : tFirst - t0,
            tps: n > 1 && tLast > tFirst ? ((n - 1) * 1000) / (tLast - tFirst) : null,
        };
    }
    state.gen = null;
    setBusy(false);
    touch(conv);
    save();
    if (state.current === conv.id) showConv();
    else renderConvList();
}

// ------------------------------------------------------------------ wiring

function send() {
    const text = $('input').value.trim();
    if (!text || state.gen) return;
    const conv = currentConv() || newConv();
    conv.system = $('system').value;
    conv.messages.push({ role: 'user', content: text });
    $('input').value = '';
    generate(conv);
}

function bindSettings() {
    const s = state.settings;
    for (const k of ['temperature', 'top_p', 'max_tokens']) {
        $(k).value = s[k] ?? '';
        $(k).addEventListener('change', () => { s[k] = $(k).value; save(); });
    }
    $('thinking').checked = s.thinking !== false;
    $('thinking').addEventListener('change', () => { s.thinking = $('thinking').checked; save(); });
    $('system').addEventListener('input', () => {
        s.system = $('system').value;
        const conv = currentConv();
        if (conv) conv.system = s.system;
        save();
    });
    $('toggle-settings').addEventListener('click', () => {
        const box = $('settings');
        box.hidden = !box.hidden;
        $('toggle-settings').setAttribute('aria-expanded', String(!box.hidden));
    });
}

function bind() {
    bindSettings();
    $('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
    $('input').addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            send();
        }
    });
    $('stop').addEventListener('click', () => { if (state.gen) state.gen.controller.abort(); });
    $('new-chat').addEventListener('click', () => {
        if (state.gen) return;
        newConv();
        showConv();
        document.body.classList.remove('side-open');
        $('input').focus();
    });
    $('toggle-side').addEventListener('click', () => document.body.classList.toggle('side-open'));
}

async function loadModel() {
    let r = null;
    try {
        r = await api('/v1/models');
        if (!r.ok) throw new Error(await errorText(r));
        const j = await r.json();
        state.model = j.data && j.data[0] ? j.data[0].id : null;
        $('model').textContent = state.model || '(no model)';
        document.title = `${state.model} \u2014 radixserve`;
    } catch (e) {
        $('model').textContent = `unavailable (${e.message || e})`;
        // Still loading, or not reachable: try again. No key given (the dialog was cancelled):
        // the next request asks again.
        if (!r || r.status !== 401) setTimeout(loadModel, 2000);
        return;
    }
    showConv();
}

// A conversation whose answer was cut by a reload (the stream died with the page) is kept
// as it was, marked stopped.
for (const c of state.convs) {
    for (const m of c.messages) if (m.pending) { delete m.pending; m.stopped = true; }
}
if (!currentConv()) state.current = state.convs.length ? state.convs[0].id : null;
bind();
showConv();
loadModel();
