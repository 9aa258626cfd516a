// webui_shots.mjs — the README's screenshots of the web UI (docs/img/webui-*.png), taken from
// the real server (models/stories260K) in Debian's Chromium. Not a test (tests/run.sh runs only
// test_*.mjs): run it by hand after changing the pages, then look at the pictures.
//   node tests/js/webui_shots.mjs            (BIN=bin/radixserve by default)
// The KV pool is kept tiny (1 MB, about 50 blocks) so a few chats already evict: the cache
// view then shows shared prefixes, a pinned path (a stream still running), a cache_salt
// namespace and nodes fading out.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.resolve(root, process.env.BIN || 'bin/radixserve');
const out = path.join(root, 'docs/img');
const port = await new Promise((res) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
});
const base = `http://127.0.0.1:${port}`;
const server = spawn(bin, ['serve', '--model', path.join(root, 'models/stories260K'), '--port', String(port),
    '--kv-cache-mb', '1', '--threads', '1'], { stdio: 'ignore', env: { ...process.env, RADIXSERVE_TEST_STEP_DELAY_MS: '15' } });
process.on('exit', () => server.kill('SIGTERM'));
for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`${base}/health`)).ok) break; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
}

const SYSTEM = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.';
const OTHER = 'Tom was a big dog. He liked to run and jump in the garden with his ball every day.';
const chat = (system, user, extra = {}) => fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'system', content: system }, { role: 'user', content: user }], temperature: 0, max_tokens: 40, ...extra }),
}).then((r) => r.json());

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'radixserve-shots-'));
const ctx = await chromium.launchPersistentContext(dir, { executablePath: '/usr/bin/chromium', headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
    viewport: { width: 1100, height: 700 } });
const page = await ctx.newPage();
await page.goto(`${base}/`);
await page.waitForFunction(() => document.getElementById('model').textContent === 'stories260K');
await page.click('#toggle-settings');
await page.fill('#system', SYSTEM);
for (const [id, v] of [['temperature', '0'], ['max_tokens', '60']]) {
    await page.fill(`#${id}`, v);
    await page.dispatchEvent(`#${id}`, 'change');
}
await page.click('#toggle-settings');
const say = async (text, k) => {
    await page.fill('#input', text);
    await page.press('#input', 'Enter');
    await page.waitForFunction((n) => {
        const a = document.querySelectorAll('#messages .msg.assistant');
        return a.length === n && !a[n - 1].classList.contains('pending');
    }, k, { timeout: 60000 });
};
await say('Tell me about her dog.', 1);
await page.click('#new-chat');
await say('What did Lily find in the park?', 1);
await say('And then what happened?', 2);
await page.screenshot({ path: path.join(out, 'webui-chat.png') });

for (const u of ['Where did he hide the ball?', 'Who did Tom meet?']) await chat(OTHER, u);
await chat(SYSTEM, 'A story for a tenant of its own.', { cache_salt: 'tenant-a' });
for (const u of ['Did Lily have a cat?', 'What was her favourite toy?', 'Did it rain?']) await chat(SYSTEM, u);
const long = chat(SYSTEM, 'Tell me a long story.', { max_tokens: 300 }); // pinned while it runs
const tree = await ctx.newPage();
await tree.setViewportSize({ width: 1100, height: 820 });
await tree.goto(`${base}/cache`);
await chat(OTHER, 'What colour was the ball?', { max_tokens: 200 }); // evicts: nodes fade
await tree.waitForTimeout(700);
await tree.screenshot({ path: path.join(out, 'webui-cache.png') });
await long;
await ctx.close();
fs.rmSync(dir, { recursive: true, force: true });
console.log(`screenshots in ${path.relative(root, out)}/`);
process.exit(0);
