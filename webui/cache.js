// cache.js — the radix tree drawn live from GET /v1/cache, polled about once a second.
// Each node: the text of its first tokens, its token count, hits, pins; colour by LRU rank
// (the order eviction follows); nodes with several children are the shared prefixes; nodes
// that disappear (evicted) stay a few seconds, fading. Deep or large trees are cut: nodes
// below the depth limit start collapsed, and at most "Nodes shown" are drawn.
import { $, api, el, errorText, store } from './common.js';

const POLL_MS = 1000;
const GHOST_MS = 4000; // how long an evicted node fades
const AGE_BUCKETS = 8; // colours age-0 (most recent) .. age-7 (least recent)
const LABEL_TOKENS = 12; // tokens of each edge fetched for its label

const view = {
    paused: false,
    prev: null, // id -> node of the previous poll (null before the first)
    ghosts: new Map(), // id -> {node, since}: evicted nodes still fading
    open: new Map(), // id -> true/false: what the user expanded or collapsed
    depth: store.get('cacheDepth', 8),
    maxNodes: store.get('cacheMaxNodes', 300),
};

// ------------------------------------------------------------------ totals

function fmtInt(n) {
    return Number(n).toLocaleString('en-US');
}

function blocksBar(b) {
    const bar = $('blocks-bar');
    bar.replaceChildren();
    const parts = [
        ['private', b.used - b.cached, 'held only by running requests'],
        ['pinned', b.pinned, 'cached, on a running request\u2019s path'],
        ['cached', b.cached - b.pinned, 'cached, evictable'],
        ['free', b.free, 'free'],
    ];
    for (const [cls, n, what] of parts) {
        if (n <= 0) continue;
        const seg = el('span', `seg ${cls}`);
        seg.style.flexGrow = String(n); // CSSOM, which the page's CSP allows (no inline styles)
        seg.title = `${fmtInt(n)} blocks ${what}`;
        bar.append(seg);
    }
}

function figures(c) {
    const dl = $('figures');
    dl.replaceChildren();
    const b = c.blocks;
    const rows = [
        ['blocks', `${fmtInt(b.used)} used / ${fmtInt(b.total)}`, 'used'],
        ['cached', fmtInt(b.cached), 'cached'],
        ['pinned', fmtInt(b.pinned), 'pinned'],
        ['free', fmtInt(b.free), 'free'],
        ['hit ratio', `${(100 * c.hit_ratio).toFixed(1)} %`, 'hit_ratio'],
        ['hit / miss tokens', `${fmtInt(c.hit_tokens)} / ${fmtInt(c.miss_tokens)}`, 'tokens'],
        ['lookups', fmtInt(c.lookups), 'lookups'],
        ['nodes', fmtInt(c.nodes), 'nodes'],
        ['evicted blocks', fmtInt(c.evicted_blocks), 'evicted'],
        ['running / waiting', `${c.running} / ${c.waiting}`, 'running'],
        ['block size', `${c.block_size} tokens`, 'block_size'],
    ];
    if (!c.prefix_cache) rows.unshift(['prefix cache', 'off (--no-prefix-cache)', 'off']);
    for (const [k, v, key] of rows) {
        const d = el('div', 'fig');
        d.dataset.fig = key;
        d.append(el('dt', null, k), el('dd', null, v));
        dl.append(d);
    }
}

// ------------------------------------------------------------------ the tree

// Children lists, leaf counts, LRU buckets and the next eviction victim of one snapshot.
function analyse(tree) {
    const byId = new Map(), top = [];
    for (const n of tree.nodes) {
        byId.set(n.id, { ...n, children: [], leaves: 0 });
    }
    for (const n of byId.values()) {
        const p = byId.get(n.parent);
        if (p) p.children.push(n);
        else top.push(n);
    }
    const post = [...byId.values()].sort((a, b) => b.depth - a.depth);
    for (const n of post) {
        if (n.children.length === 0) n.leaves = n.depth > 0 ? 1 : 0;
        const p = byId.get(n.parent);
        if (p) p.leaves += n.leaves;
    }
    const token = [...byId.values()].filter((n) => n.depth > 0);
    const recent = token.slice().sort((a, b) => b.last_access - a.last_access || b.id - a.id);
    recent.forEach((n, i) => { n.age = Math.min(AGE_BUCKETS - 1, Math.floor((i * AGE_BUCKETS) / recent.length)); });
    let victim = null;
    for (const n of recent) if (n.pin === 0 && n.children.length === 0) victim = n; // oldest wins
    return { byId, top, victim };
}

// Evicted nodes (gone since the last poll) join the ghosts; old ghosts go.
function updateGhosts(byId, now) {
    for (const [id, n] of view.prev || []) {
        if (!byId.has(id) && !view.ghosts.has(id)) view.ghosts.set(id, { node: n, since: now });
    }
    for (const [id, g] of view.ghosts) if (byId.has(id) || now - g.since > GHOST_MS) view.ghosts.delete(id);
}

function showText(n) {
    if (n.depth === 0) return n.ns === '0' ? 'shared namespace' : `namespace ${n.ns} (cache_salt)`;
    const t = (n.text ?? '').replace(/\n/g, '\u23ce');
    return n.tokens && n.n_tokens > n.tokens.length ? `${t}\u2026` : t;
}

function badge(cls, text, title) {
    const b = el('span', `badge ${cls}`, text);
    if (title) b.title = title;
    return b;
}

function nodeBox(n, ctx, ghost) {
    const box = el('div', 'node');
    box.dataset.id = String(n.id);
    if (n.depth === 0) box.classList.add('ns');
    else box.classList.add(`age-${ghost ? AGE_BUCKETS - 1 : n.age}`);
    if (ghost) {
        box.classList.add('ghost');
        box.style.animationDelay = `${-(ctx.now - ghost.since) / 1000}s`; // CSSOM: CSP allows it
    }
    const old = ctx.polled && view.prev.get(n.id);
    if (!ghost && n.depth > 0 && ctx.polled && (!old || old.hits !== n.hits)) box.classList.add(old ? 'hit' : 'new');
    const label = el('span', 'label', showText(n));
    label.title = n.depth === 0 ? '' : `${n.text ?? ''}\n\nnode ${n.id}, blocks ${n.blocks.join(', ')}`;
    box.append(label);
    if (n.depth > 0) {
        box.append(badge('tok', `${fmtInt(n.n_tokens)} tok`, `${n.n_blocks} blocks of ${ctx.bs} tokens`));
        box.append(badge('hits', `${fmtInt(n.hits)} hit${n.hits === 1 ? '' : 's'}`, 'requests that reused this edge'));
    } else {
        box.append(badge('tok', `${fmtInt(n.leaves)} leaves`));
    }
    if (n.pin > 0) {
        box.classList.add('pinned');
        box.append(badge('pin', `pinned \u00d7${n.pin}`, 'running requests on this path: it cannot be evicted'));
    }
    if (!ghost && n.depth > 0 && n.children.length > 1) {
        box.classList.add('shared');
        box.append(badge('shared', `shared by ${n.leaves}`, `${n.children.length} branches below this prefix`));
    }
    if (ghost) box.append(badge('gone', 'evicted'));
    else if (ctx.victim === n) box.append(badge('next', 'next out', 'the least recently used evictable leaf'));
    return box;
}

function isOpen(n) {
    if (view.open.has(n.id)) return view.open.get(n.id);
    return n.depth < view.depth;
}

function ghostsUnder(parentId) {
    const out = [];
    for (const g of view.ghosts.values()) if (g.node.parent === parentId) out.push(g);
    return out;
}

// One node and, when open, its children; returns the <li>, or null past the node budget.
function nodeItem(n, ctx, ghost) {
    if (ctx.shown >= view.maxNodes) {
        ctx.hidden++;
        return null;
    }
    ctx.shown++;
    const li = el('li');
    const row = el('div', 'row-node');
    const kids = ghost ? [] : n.children;
    const ghosts = ghostsUnder(n.id); // a chain evicted at once fades as a chain
    if (kids.length + ghosts.length > 0) {
        const open = isOpen(n);
        const t = el('button', 'twisty', open ? '\u25be' : '\u25b8');
        t.type = 'button';
        t.setAttribute('aria-expanded', String(open));
        t.title = open ? 'Collapse' : `Expand (${kids.length} children)`;
        t.addEventListener('click', () => { view.open.set(n.id, !open); render(); });
        row.append(t);
        row.append(nodeBox(n, ctx, ghost));
        li.append(row);
        if (open) li.append(childList(kids, ghosts, ctx));
        else ctx.hidden += countBelow(n);
    } else {
        row.append(el('span', 'twisty-space'));
        row.append(nodeBox(n, ctx, ghost));
        li.append(row);
    }
    return li;
}

function countBelow(n) {
    let k = 0;
    for (const c of n.children) k += 1 + countBelow(c);
    return k;
}

function childList(kids, ghosts, ctx) {
    const ul = el('ul', 'tree');
    for (const c of kids) {
        const li = nodeItem(c, ctx, null);
        if (li) ul.append(li);
    }
    for (const g of ghosts) {
        const li = nodeItem(g.node, ctx, g);
        if (li) ul.append(li);
    }
    return ul;
}

let last = null; // the last snapshot, to draw again when a control changes

function render() {
    if (!last) return;
    const { data, a, now } = last;
    const box = $('tree');
    box.replaceChildren();
    const ctx = { now, victim: a.victim, bs: data.block_size, shown: 0, hidden: 0, polled: view.prev !== null };
    if (!data.tree) {
        box.append(el('p', 'empty', 'This server shows no tree.'));
        return;
    }
    const placed = (p) => p === 0 || a.byId.has(p) || view.ghosts.has(p);
    const orphans = [...view.ghosts.values()].filter((g) => !placed(g.node.parent));
    box.append(childList(a.top, [...ghostsUnder(0), ...orphans], ctx));
    if (a.top.length === 0 && view.ghosts.size === 0)
        box.append(el('p', 'empty', 'The cache is empty: send a request (the chat page is at /).'));
    if (ctx.hidden > 0) box.append(el('p', 'more', `${fmtInt(ctx.hidden)} more nodes not drawn (expand a node, or raise the depth or the nodes shown).`));
}

// ------------------------------------------------------------------ polling

async function poll() {
    if (view.paused || document.hidden) return;
    const t0 = performance.now();
    try {
        const r = await api(`/v1/cache?tokens=${LABEL_TOKENS}`);
        if (!r.ok) throw new Error(await errorText(r));
        const data = await r.json();
        const now = Date.now();
        const a = data.tree ? analyse(data.tree) : { byId: new Map(), top: [], victim: null };
        updateGhosts(a.byId, now);
        blocksBar(data.blocks);
        figures(data);
        last = { data, a, now };
        render();
        view.prev = a.byId;
        $('status').textContent = `updated ${new Date(now).toLocaleTimeString()} (${Math.round(performance.now() - t0)} ms)`;
        $('status').classList.remove('error');
    } catch (e) {
        $('status').textContent = `cannot read /v1/cache: ${e.message || e}`;
        $('status').classList.add('error');
    }
}

async function loop() {
    await poll();
    setTimeout(loop, POLL_MS);
}

function bindNumber(id, key, min, max) {
    const input = $(id);
    input.value = String(view[key]);
    input.addEventListener('change', () => {
        const v = Math.round(Number(input.value));
        const next = Number.isFinite(v) ? Math.max(min, Math.min(max, v)) : view[key];
        input.value = String(next);
        if (next === view[key]) return; // (a change on blur must not redraw under a click)
        view[key] = next;
        store.set(key === 'depth' ? 'cacheDepth' : 'cacheMaxNodes', view[key]);
        view.open.clear();
        render();
    });
}

bindNumber('depth', 'depth', 1, 64);
bindNumber('max-nodes', 'maxNodes', 10, 5000);
$('pause').addEventListener('click', () => {
    view.paused = !view.paused;
    $('pause').textContent = view.paused ? 'Resume' : 'Pause';
    if (!view.paused) poll();
});
loop();
