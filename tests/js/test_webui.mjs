// test_webui.mjs — the web UI in a real browser: Debian's Chromium driven by playwright-core,
// against the real server (models/stories260K). The chat page loads with no console errors
// (CSP violations included), streams an answer over several renders that equals the server's
// own non-streamed answer, shows usage, keeps cached tokens > 0 for a second chat with the same
// system prompt, which /cache draws as a shared node; Stop leaves nothing running within a
// second; regenerate, edit-and-resend, reload; Markdown with a copy button and sanitising
// (through a scripted stream); 375 px; the API key dialog; --no-webui (flag and config key);
// every embedded file byte-equal to webui/. Screenshots go to $BUILD/webui/. Prints TAP.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = process.env.RADIXSERVE_ROOT ||
    path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.resolve(root, process.env.BIN || 'bin/radixserve');
const shots = path.resolve(root, process.env.BUILD || 'build/release', 'webui');
const CHROMIUM = '/usr/bin/chromium';
let n = 0, failed = 0;
const ok = (cond, what) => {
    n++;
    if (!cond) failed++;
    console.log(`${cond ? '' : 'not '}ok ${n} - ${what}`);
};

if (!fs.existsSync(CHROMIUM)) {
    // scripts/deps.sh installs it for make test; a bare run elsewhere says why it did nothing.
    console.log(`ok 1 - web UI in a browser # SKIP ${CHROMIUM} is missing (make deps-test installs it)`);
    process.exit(0);
}
const { chromium } = await import('playwright-core');

const freePort = () => new Promise((res) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
});

const servers = [];
async function startServer(extra, env = {}) {
    const port = await freePort();
    const p = spawn(bin, ['serve', '--model', path.join(root, 'models/stories260K'), '--port', String(port),
        '--kv-cache-mb', '16', '--threads', '1', ...extra], { stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, ...env } });
    const srv = { proc: p, base: `http://127.0.0.1:${port}`, log: '' };
    p.stderr.on('data', (d) => { srv.log += d; });
    servers.push(srv);
    for (let i = 0; i < 150; i++) {
        try { if ((await fetch(`${srv.base}/health`)).status === 200) return srv; } catch { /* not up */ }
        await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`server did not start: ${srv.log.slice(-300)}`);
}
const stopAll = () => { for (const s of servers) try { s.proc.kill('SIGTERM'); } catch { /* gone */ } };
process.on('exit', stopAll);
const watchdog = setTimeout(() => { console.log('not ok - timed out'); stopAll(); process.exit(1); }, 240000);

async function metric(base, name) {
    const text = await (await fetch(`${base}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(name + ' '));
    return line ? Number(line.split(' ')[1]) : NaN;
}

const profiles = [];
async function browser() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'radixserve-chromium-'));
    profiles.push(dir);
    const ctx = await chromium.launchPersistentContext(dir, {
        executablePath: CHROMIUM,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        viewport: { width: 1200, height: 800 },
    });
    return ctx;
}

const errors = []; // console errors and page errors of every page opened
function watch(page, name) {
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${name}: ${m.text()}`); });
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    return page;
}

// ------------------------------------------------------------------ page helpers

const SYSTEM = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends and her dog.';

const answered = (page, count) => page.waitForFunction((k) => {
    const a = document.querySelectorAll('#messages .msg.assistant');
    return a.length === k && !a[k - 1].classList.contains('pending');
}, count, { timeout: 60000 });

// The conversation shown, as kept in localStorage by the page.
const storedConv = (page) => page.evaluate(() => {
    const convs = JSON.parse(localStorage.getItem('radixserve.convs'));
    const id = JSON.parse(localStorage.getItem('radixserve.current'));
    return convs.find((c) => c.id === id);
});

const statOf = (page, k) => page.evaluate((key) => {
    const a = [...document.querySelectorAll('#messages .msg.assistant')].pop();
    const s = a && a.querySelector(`[data-stat="${key}"]`);
    return s ? s.dataset.value : null;
}, k);

// Lengths of the last answer's text at each render, recorded from the next render on.
const recordRenders = (page) => page.evaluate(() => {
    window.renderLengths = [];
    new MutationObserver(() => {
        const a = [...document.querySelectorAll('#messages .msg.assistant')].pop();
        const len = a ? a.querySelector('.content').textContent.length : 0;
        const l = window.renderLengths;
        if (a && a.classList.contains('pending') && len !== l[l.length - 1]) l.push(len);
    }).observe(document.getElementById('messages'), { childList: true, subtree: true });
});

async function send(page, text) {
    await page.fill('#input', text);
    await page.press('#input', 'Enter');
}

async function serverAnswer(base, conv) {
    const messages = [{ role: 'system', content: conv.system }, ...conv.messages.slice(0, -1)
        .map((m) => ({ role: m.role, content: m.content }))];
    const r = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages, temperature: 0, max_tokens: 60 }) });
    return r.json();
}

// ------------------------------------------------------------------ the checks

async function staticFiles(base) {
    const r = await fetch(`${base}/`);
    const csp = r.headers.get('content-security-policy') || '';
    ok(r.status === 200 && r.headers.get('content-type').startsWith('text/html') &&
        csp.includes("script-src 'self'") && csp.includes("style-src 'self'") && !csp.includes('unsafe'),
    `GET / is the chat page under a strict CSP (${csp})`);
    const cache = await fetch(`${base}/cache`);
    ok(cache.status === 200 && (await cache.text()).includes('cache.js'), 'GET /cache is the tree view');
    const files = [];
    const walk = (d) => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) {
            const p = path.join(d, e.name);
            if (e.isDirectory()) walk(p);
            else if (!e.name.startsWith('.')) files.push(path.relative(path.join(root, 'webui'), p));
        }
    };
    walk(path.join(root, 'webui'));
    const differ = [];
    for (const f of files) {
        const got = Buffer.from(await (await fetch(`${base}/webui/${f}`)).arrayBuffer());
        if (!got.equals(fs.readFileSync(path.join(root, 'webui', f)))) differ.push(f);
    }
    ok(files.length >= 8 && differ.length === 0, `${files.length} embedded files equal webui/ (differ: ${differ.join(' ') || 'none'})`);
    const miss = await fetch(`${base}/webui/nope.js`);
    ok(miss.status === 404 && (await miss.json()).error.code === 'not_found', 'an unknown UI file is a JSON 404');
}

async function chat(ctx, base) {
    const page = watch(await ctx.newPage(), 'chat');
    await page.goto(`${base}/`);
    await page.waitForFunction(() => document.getElementById('model').textContent === 'stories260K', null, { timeout: 10000 });
    ok(true, 'the chat page shows the model name from /v1/models');
    await page.click('#toggle-settings');
    await page.fill('#system', SYSTEM);
    await page.fill('#temperature', '0');
    await page.fill('#max_tokens', '60');
    await page.dispatchEvent('#max_tokens', 'change');
    await page.dispatchEvent('#temperature', 'change');
    await page.click('#toggle-settings');

    await recordRenders(page);
    await send(page, 'Tell me a story about a cat.');
    await answered(page, 1);
    const lengths = await page.evaluate(() => window.renderLengths);
    const growing = lengths.every((v, i) => i === 0 || v > lengths[i - 1]);
    ok(lengths.length >= 3 && growing, `the answer grew over ${lengths.length} renders before it ended (${lengths.slice(0, 8).join(',')}...)`);
    let conv = await storedConv(page);
    const ref = await serverAnswer(base, conv);
    ok(conv.messages.length === 2 && conv.messages[1].content === ref.choices[0].message.content,
        'the streamed answer equals the server\'s non-streamed answer to the same request');
    ok(Number(await statOf(page, 'prompt')) === ref.usage.prompt_tokens && Number(await statOf(page, 'completion')) === 60 &&
        (await statOf(page, 'ttft')) !== null && Number(await statOf(page, 'tps')) > 0,
    `under the answer: prompt ${await statOf(page, 'prompt')} tokens (server: ${ref.usage.prompt_tokens}), completion, TTFT, tok/s`);

    await page.click('#new-chat');
    await send(page, 'Tell me a story about a dog.');
    await answered(page, 1);
    const cached = Number(await statOf(page, 'cached'));
    ok(cached >= 16, `a second chat with the same system prompt: cached tokens ${cached} > 0`);
    await page.screenshot({ path: path.join(shots, 'chat.png') });

    const tree = watch(await ctx.newPage(), 'cache');
    await tree.goto(`${base}/cache`);
    const shared = await tree.waitForFunction(() => [...document.querySelectorAll('.node.shared .label')]
        .some((l) => l.textContent.includes('Once upon a time')), null, { timeout: 10000 }).then(() => true, () => false);
    ok(shared, '/cache draws the system prompt as a node shared by both chats');
    const leaves = await tree.evaluate(() => document.querySelector('.node.shared .badge.shared').textContent);
    const ratio = await tree.evaluate(() => document.querySelector('[data-fig="hit_ratio"] dd').textContent);
    ok(leaves === 'shared by 2' && parseFloat(ratio) > 0, `the shared node: "${leaves}", hit ratio ${ratio}`);
    const full = await tree.evaluate(() => ({ all: document.querySelectorAll('.node').length,
        kids: document.querySelector('.node.shared').closest('li').querySelector(':scope > ul').children.length }));
    await tree.fill('#depth', '1');
    await tree.dispatchEvent('#depth', 'change');
    const cut = await tree.evaluate(() => ({ nodes: document.querySelectorAll('.node').length, more: document.querySelector('.more')?.textContent }));
    await tree.click('.node.shared >> xpath=preceding-sibling::button[contains(@class,"twisty")]');
    const opened = await tree.evaluate(() => document.querySelectorAll('.node').length);
    ok(cut.nodes === 2 && (cut.more || '').startsWith(`${full.all - 2} more nodes`) && opened === 2 + full.kids,
        `a depth limit folds the tree (${cut.nodes} nodes drawn, "${cut.more}"), a click unfolds a node (${opened})`);
    await tree.fill('#depth', '8');
    await tree.dispatchEvent('#depth', 'change');
    await tree.waitForTimeout(1300); // past the first poll's highlight
    await tree.screenshot({ path: path.join(shots, 'cache.png'), fullPage: true });
    await tree.setViewportSize({ width: 375, height: 740 });
    await tree.waitForTimeout(300);
    const treeWidth = await tree.evaluate(() => document.documentElement.scrollWidth);
    await tree.screenshot({ path: path.join(shots, 'cache-375.png'), fullPage: true });
    ok(treeWidth <= 375, `the cache view fits 375 px (scroll width ${treeWidth})`);
    await tree.close();

    const before = (await storedConv(page)).messages[1].content;
    await page.click('#messages .msg.assistant .tools button:has-text("Regenerate")');
    await answered(page, 1);
    conv = await storedConv(page);
    ok(conv.messages.length === 2 && conv.messages[1].content === before, 'regenerate answers again in place (greedy: the same text)');

    await page.click('#messages .msg.user .tools button:has-text("Edit")');
    await page.fill('#messages textarea.edit', 'Tell me a story about a bird.');
    await page.press('#messages textarea.edit', 'Enter');
    await answered(page, 1);
    conv = await storedConv(page);
    ok(conv.messages.length === 2 && conv.messages[0].content === 'Tell me a story about a bird.' && conv.messages[1].content.length > 0,
        'edit-and-resend replaces the message and its answer');

    await page.click('#toggle-settings');
    await page.fill('#max_tokens', '400');
    await page.dispatchEvent('#max_tokens', 'change');
    await page.click('#toggle-settings');
    await send(page, 'And then?');
    await page.waitForFunction(() => {
        const a = [...document.querySelectorAll('#messages .msg.assistant')].pop();
        return a.classList.contains('pending') && a.querySelector('.content').textContent.length > 20;
    }, null, { timeout: 30000 });
    const runningBefore = await metric(base, 'radixserve_running_sequences');
    await page.click('#stop');
    const t0 = Date.now();
    let running = NaN;
    while (Date.now() - t0 < 1000) {
        running = await metric(base, 'radixserve_running_sequences');
        if (running === 0) break;
        await new Promise((r) => setTimeout(r, 50));
    }
    ok(runningBefore === 1 && running === 0, `Stop: running sequences ${runningBefore} -> ${running} after ${Date.now() - t0} ms`);
    await answered(page, 2);
    conv = await storedConv(page);
    const last = conv.messages[3];
    ok(last.stopped === true && last.content.length > 0 && !last.stats,
        `the stopped answer keeps its ${last.content.length} characters, marked stopped`);

    const shown = await page.evaluate(() => [...document.querySelectorAll('#messages .msg .content')].map((e) => e.textContent));
    await page.reload();
    await page.waitForFunction(() => document.getElementById('model').textContent === 'stories260K');
    const after = await page.evaluate(() => [...document.querySelectorAll('#messages .msg .content')].map((e) => e.textContent));
    const convCount = await page.evaluate(() => document.querySelectorAll('#conv-list li').length);
    ok(JSON.stringify(after) === JSON.stringify(shown) && shown.length === 4 && convCount === 2,
        `reload keeps the conversation (${after.length} messages) and the list (${convCount})`);
    return page;
}

// A scripted stream (the browser's request never reaches the server): reasoning, Markdown with a
// code block, and HTML that must not survive the sanitiser.
async function markdown(ctx, base, page) {
    const chunks = [
        { choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] },
        { choices: [{ index: 0, delta: { reasoning_content: 'The user wants code.' } }] },
        { choices: [{ index: 0, delta: { content: '**Here** it is:\n\n```c\nint main(void) { return 0; }\n```\n' } }] },
        { choices: [{ index: 0, delta: { content: '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>' } }] },
        { choices: [{ index: 0, delta: { content: '[link](javascript:window.pwned=3) <a href="/x" onclick="window.pwned=4">a</a>' } }] },
        { choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] },
        { choices: [], usage: { prompt_tokens: 7, completion_tokens: 5, total_tokens: 12, prompt_tokens_details: { cached_tokens: 0 } } },
    ];
    const body = chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n';
    const mark = errors.length;
    await page.route('**/v1/chat/completions', (route) => route.fulfill({ status: 200, contentType: 'text/event-stream', body }));
    await page.click('#new-chat');
    await send(page, 'Show me code.');
    await answered(page, 1);
    await page.unroute('**/v1/chat/completions');
    const r = await page.evaluate(() => {
        const a = [...document.querySelectorAll('#messages .msg.assistant')].pop();
        const c = a.querySelector('.content');
        return {
            strong: c.querySelector('strong')?.textContent,
            code: c.querySelector('pre code')?.textContent,
            copy: Boolean(c.querySelector('pre button.copy')),
            img: c.querySelectorAll('img, script').length,
            handlers: [...c.querySelectorAll('*')].some((e) => [...e.attributes].some((x) => x.name.startsWith('on'))),
            jsLinks: [...c.querySelectorAll('a')].filter((x) => (x.getAttribute('href') || '').startsWith('javascript')).length,
            reasoning: a.querySelector('details.reasoning .reasoning-text')?.textContent,
            open: a.querySelector('details.reasoning')?.open,
            pwned: window.pwned,
        };
    });
    ok(r.strong === 'Here' && r.code === 'int main(void) { return 0; }\n' && r.copy, 'Markdown: bold, a code block with a copy button');
    ok(r.img === 0 && !r.handlers && r.jsLinks === 0 && r.pwned === undefined,
        `sanitised: no img/script, no on* attributes, no javascript: links, nothing ran (${JSON.stringify(r)})`);
    ok(r.reasoning === 'The user wants code.' && r.open === false, 'reasoning shown collapsed in its own <details>');
    // Chromium reports (and blocks) inline handlers as soon as the sanitiser parses them: the
    // CSP at work. They are this step's only console errors, and are not counted below.
    const reports = errors.splice(mark);
    ok(reports.length > 0 && reports.every((e) => e.includes('inline event handler')),
        `the CSP blocked the inline handlers while they were parsed (${reports.length} reports, nothing else)`);
    await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    await page.click('#messages .msg.assistant pre button.copy');
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    ok(clip === 'int main(void) { return 0; }\n', 'the copy button copies the code');
    await page.click('#conv-list li.active .conv-del'); // the pages opened next show a real chat
    ok(await page.evaluate(() => document.querySelectorAll('#conv-list li').length) === 2, 'a conversation is deleted with its x');
}

async function mobile(ctx, base) {
    const page = watch(await ctx.newPage(), 'chat-375');
    await page.setViewportSize({ width: 375, height: 740 });
    await page.goto(`${base}/`);
    await page.waitForFunction(() => document.getElementById('model').textContent === 'stories260K');
    await page.waitForTimeout(300);
    const m = await page.evaluate(() => {
        const r = (id) => document.getElementById(id).getBoundingClientRect();
        return { width: document.documentElement.scrollWidth, side: r('side').right, send: r('send').right, input: r('input').width };
    });
    await page.screenshot({ path: path.join(shots, 'chat-375.png') });
    ok(m.width <= 375 && m.side <= 0 && m.send <= 375 && m.input > 200,
        `375 px: no horizontal scroll (${m.width}), conversations folded away, composer fits (${JSON.stringify(m)})`);
    await page.click('#toggle-side');
    await page.waitForTimeout(300);
    const side = await page.evaluate(() => document.getElementById('side').getBoundingClientRect().left);
    ok(side >= 0, 'the menu button shows the conversations');
    await page.close();
}

async function apiKey(ctx) {
    // A 1 MB pool (51 blocks): a few requests evict, for the cache view's fading nodes below.
    const srv = await startServer(['--api-key', 'sekret', '--kv-cache-mb', '1']);
    const pub = await fetch(`${srv.base}/`), api = await fetch(`${srv.base}/v1/models`);
    ok(pub.status === 200 && (await fetch(`${srv.base}/webui/chat.js`)).status === 200 && api.status === 401,
        '--api-key: the pages stay public, the API answers 401');
    const page = watch(await ctx.newPage(), 'chat-key');
    // The 401s the page gets before it has a key are the protocol, not errors of the page.
    const expected = (e) => e.includes('401');
    const mark = errors.length;
    await page.goto(`${srv.base}/`);
    await page.waitForSelector('#key-dialog[open]', { timeout: 10000 });
    await page.fill('#key-input', 'wrong');
    await page.click('#key-save');
    await page.waitForFunction(() => document.getElementById('key-dialog').open &&
        document.getElementById('key-msg').textContent.includes('not accepted'), null, { timeout: 10000 });
    await page.fill('#key-input', 'sekret');
    await page.click('#key-save');
    await page.waitForFunction(() => document.getElementById('model').textContent === 'stories260K', null, { timeout: 10000 });
    ok(true, 'the key dialog asks again after a wrong key, then the page works');
    await page.reload();
    await page.waitForFunction(() => document.getElementById('model').textContent === 'stories260K', null, { timeout: 10000 });
    const asked = await page.evaluate(() => Boolean(document.getElementById('key-dialog')?.open));
    ok(!asked, 'after a reload the kept key is used without asking');

    const tree = watch(await ctx.newPage(), 'cache-key');
    await tree.goto(`${srv.base}/cache`);
    const ask = (system) => fetch(`${srv.base}/v1/chat/completions`, { method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sekret' },
        body: JSON.stringify({ messages: [{ role: 'system', content: system }, { role: 'user', content: 'Go on.' }],
            temperature: 0, max_tokens: 100 }) }).then((r) => r.json());
    await ask(SYSTEM);
    const first = await tree.waitForFunction(() => document.querySelector('.node[data-id] .badge.tok') &&
        document.querySelectorAll('.node:not(.ns)').length > 0, null, { timeout: 5000 })
        .then(() => tree.evaluate(() => [...document.querySelectorAll('.node:not(.ns)')].map((e) => e.dataset.id)));
    for (let i = 0; i < 8; i++) await ask(`${i} ${'Tom had a red ball and a big blue kite. '.repeat(2)}`);
    const ghost = await tree.waitForFunction((ids) => {
        const g = [...document.querySelectorAll('.node.ghost')].find((e) => ids.includes(e.dataset.id));
        return g && { id: g.dataset.id, opacity: Number(getComputedStyle(g).opacity) };
    }, first, { timeout: 5000 }).then((h) => h.jsonValue(), () => null);
    ok(ghost && ghost.opacity < 1, `the cache view (same key) shows an evicted node fading (${JSON.stringify(ghost)})`);
    if (ghost) {
        await tree.waitForTimeout(5000);
        const gone = await tree.evaluate((id) => !document.querySelector(`.node[data-id="${id}"]`), ghost.id);
        ok(gone, 'and then drops it');
    }
    await tree.close();
    errors.splice(mark, errors.length - mark, ...errors.slice(mark).filter((e) => !expected(e)));
    await page.close();
}

async function noWebui() {
    const a = await startServer(['--no-webui']);
    const cfgFile = path.join(os.tmpdir(), `radixserve-nowebui-${process.pid}.json`);
    fs.writeFileSync(cfgFile, JSON.stringify({ 'no-webui': true }));
    const b = await startServer(['--config', cfgFile]);
    fs.rmSync(cfgFile);
    for (const [srv, how] of [[a, '--no-webui'], [b, 'config "no-webui": true']]) {
        const codes = [];
        for (const p of ['/', '/index.html', '/cache', '/webui/chat.js']) codes.push((await fetch(srv.base + p)).status);
        const models = await fetch(`${srv.base}/v1/models`);
        ok(codes.every((c) => c === 404) && models.status === 200, `${how}: pages 404 (${codes.join(',')}), the API answers`);
    }
}

async function main() {
    fs.mkdirSync(shots, { recursive: true });
    // Tokens arrive over seconds; no warmed next turns, so the tree holds exactly the chats sent.
    const srv = await startServer(['--warm-next-turn', '0'], { RADIXSERVE_TEST_STEP_DELAY_MS: '20' });
    await staticFiles(srv.base);
    const ctx = await browser();
    try {
        const page = await chat(ctx, srv.base);
        await markdown(ctx, srv.base, page);
        await mobile(ctx, srv.base);
        await apiKey(ctx);
    } finally {
        await ctx.close();
    }
    await noWebui();
    ok(errors.length === 0, `no console errors on any page (${errors.slice(0, 5).join(' | ') || 'none'})`);
    const pngs = ['chat.png', 'chat-375.png', 'cache.png', 'cache-375.png'].filter((f) => fs.existsSync(path.join(shots, f)));
    ok(pngs.length === 4, `screenshots in ${path.relative(root, shots)}/: ${pngs.join(' ')}`);
}

try {
    await main();
} catch (e) {
    ok(false, `unexpected: ${e.stack || e}`);
} finally {
    clearTimeout(watchdog);
    stopAll();
    for (const d of profiles) fs.rmSync(d, { recursive: true, force: true });
}
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
