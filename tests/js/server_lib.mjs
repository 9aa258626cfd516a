// server_lib.mjs — what the Node server tests share (imported by tests/js/test_*.mjs; not a test
// itself): TAP counting, starting bin/radixserve on a free port and waiting until it is ready,
// and the ending (SIGTERM, exit status 0 checked, the plan line).
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = process.env.RADIXSERVE_ROOT ||
    path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.resolve(root, process.env.BIN || 'bin/radixserve');
let n = 0, failed = 0;

export const ok = (cond, what) => {
    n++;
    if (!cond) failed++;
    console.log(`${cond ? '' : 'not '}ok ${n} - ${what}`);
};

const freePort = () => new Promise((res) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
});

// `serve --model models/stories260K` plus args on a free port; the whole test is failed and
// ended after timeoutMs. Returns {base, server, log(), ready()}.
export async function startServer(args, env, timeoutMs) {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const server = spawn(bin, ['serve', '--model', path.join(root, 'models/stories260K'), '--port',
        String(port), '--kv-cache-mb', '16', '--threads', '1', ...args],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    let log = '';
    server.stderr.on('data', (d) => { log += d; });
    const stop = () => { try { server.kill('SIGTERM'); } catch { /* already gone */ } };
    process.on('exit', stop);
    const watchdog = setTimeout(() => { console.log('not ok - timed out'); stop(); process.exit(1); },
        timeoutMs);
    const ready = async () => {
        for (let i = 0; i < 150; i++) {
            try { if ((await fetch(`${base}/health`)).status === 200) return true; } catch { /* not up */ }
            await new Promise((r) => setTimeout(r, 100));
        }
        return false;
    };
    return { base, server, log: () => log, ready, stop, watchdog };
}

// Run main (an unexpected throw is a failure), stop the server, check it exits 0, print the plan.
export async function runAndFinish(srv, main) {
    try { await main(); } catch (e) { ok(false, `unexpected: ${e.stack}`); }
    srv.stop();
    const code = await new Promise((res) => {
        if (srv.server.exitCode !== null) return res(srv.server.exitCode);
        srv.server.on('exit', (c) => res(c));
    });
    ok(code === 0, `server exits 0 on SIGTERM (${code})`);
    clearTimeout(srv.watchdog);
    console.log(`1..${n}`);
    process.exit(failed ? 1 : 0);
}
