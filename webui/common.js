// common.js — what the chat page and the cache view share: settings kept in localStorage, and
// fetch with the API key, which is asked for once (when the server answers 401) and then kept.

const PREFIX = 'radixserve.';

export const store = {
    get(key, fallback) {
        try {
            const v = localStorage.getItem(PREFIX + key);
            return v === null ? fallback : JSON.parse(v);
        } catch {
            return fallback;
        }
    },
    set(key, value) {
        try {
            localStorage.setItem(PREFIX + key, JSON.stringify(value));
        } catch {
            /* storage full or disabled: the page still works, it just forgets */
        }
    },
};

export const $ = (id) => document.getElementById(id);

// An element with a class and text (never HTML: text from the server goes in as text).
export function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
}

let asking = null; // one dialog at a time, however many requests got a 401

// The key dialog, made on first use: <dialog id="key-dialog"> with #key-msg, #key-input and
// the buttons Cancel and Save (#key-save).
function keyDialog() {
    let dlg = $('key-dialog');
    if (dlg) return dlg;
    dlg = el('dialog');
    dlg.id = 'key-dialog';
    const form = el('form');
    form.method = 'dialog';
    const msg = el('p');
    msg.id = 'key-msg';
    const input = el('input');
    Object.assign(input, { id: 'key-input', type: 'password', autocomplete: 'off' });
    input.setAttribute('aria-label', 'API key');
    const row = el('div', 'row end');
    const cancel = el('button', null, 'Cancel'), save = el('button', null, 'Save');
    cancel.value = 'cancel';
    cancel.formNoValidate = true;
    save.value = 'ok';
    save.id = 'key-save';
    row.append(cancel, save);
    form.append(msg, input, row);
    dlg.append(form);
    document.body.append(dlg);
    return dlg;
}

function askKey(again) {
    if (asking) return asking;
    const dlg = keyDialog(), input = $('key-input'), msg = $('key-msg');
    msg.textContent = again ? 'That key was not accepted. API key:' : 'This server needs an API key:';
    input.value = '';
    asking = new Promise((resolve) => {
        dlg.addEventListener('close', () => {
            asking = null;
            const key = dlg.returnValue === 'ok' ? input.value.trim() : '';
            if (key) store.set('apiKey', key);
            resolve(Boolean(key));
        }, { once: true });
        dlg.showModal();
        input.focus();
    });
    return asking;
}

// fetch(path) with "Authorization: Bearer KEY" when a key is kept; a 401 asks for the key and
// tries again (until the user cancels the dialog).
export async function api(path, opts = {}) {
    for (let tries = 0; ; tries++) {
        const key = store.get('apiKey', '');
        const headers = { ...(opts.headers || {}) };
        if (key) headers.Authorization = `Bearer ${key}`;
        const r = await fetch(path, { ...opts, headers });
        if (r.status !== 401 || !(await askKey(tries > 0 || Boolean(key)))) return r;
    }
}

// The message of an OpenAI-shaped error response (or its status line).
export async function errorText(r) {
    try {
        const j = await r.json();
        if (j && j.error && j.error.message) return `${r.status}: ${j.error.message}`;
    } catch {
        /* not JSON */
    }
    return `${r.status} ${r.statusText}`;
}
