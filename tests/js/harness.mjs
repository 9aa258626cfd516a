// harness.mjs — what the server-driving Node tests share: TAP output, a free port, waiting for
// /health. Not a test itself (tests/run.sh runs tests/js/test_*.mjs only).
import net from 'node:net';

// ok(cond, what) prints one TAP line; done() prints the plan and gives the exit status.
export function tap() {
    let n = 0, failed = 0;
    const ok = (cond, what) => {
        n++;
        if (!cond) failed++;
        console.log(`${cond ? '' : 'not '}ok ${n} - ${what}`);
    };
    const done = () => {
        console.log(`1..${n}`);
        return failed ? 1 : 0;
    };
    return { ok, done };
}

export const freePort = () => new Promise((res) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
});

// true once GET base/health answers 200 (tries x 100 ms at most).
export async function waitReady(base, tries = 150) {
    for (let i = 0; i < tries; i++) {
        try { if ((await fetch(`${base}/health`)).status === 200) return true; } catch { /* not up */ }
        await new Promise((r) => setTimeout(r, 100));
    }
    return false;
}
