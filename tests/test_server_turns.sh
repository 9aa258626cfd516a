#!/usr/bin/env bash
# test_server_turns.sh — multi-turn chats hit the cache through their whole history (issue 21):
# the tiny random Qwen3 (bench/make_model.py) with models/qwen3-tokenizer's real template, three
# servers (warming on, warming off, prefix cache off), 5-turn chats in thinking and non-thinking
# mode, each turn sent a second after the previous answer as a chat UI re-sends it (the answer's
# content as an assistant message). Checks: every turn's cached_tokens >= the re-sent history's
# tokens - 1 with warming on; answers identical on all three servers; on the warming server,
# no warm step runs while a request is being answered (from /metrics steps_total and
# warm_steps_total read before sending, at the first streamed token and at the finish); warm
# tokens computed and hit are counted.
set -u
. "$(dirname "$0")/server_lib.sh" test_server_turns
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT

if [ ! -x "$BIN" ] || ! "$BIN" serve --help >/dev/null 2>&1; then echo "ok 1 - # SKIP $BIN serve not built"; exit 0; fi
if ! $PY bench/make_model.py --out "$TMP/tiny-qwen3" --preset tiny-qwen3 --dtype f32 --seed 3 >/dev/null 2>&1; then
    echo "ok 1 - # SKIP bench/make_model.py could not write the tiny Qwen3 model"; exit 0
fi
URLS=()
for flags in "--warm-next-turn 1" "--warm-next-turn 0" "--no-prefix-cache"; do
    port=$(free_port)
    # 15 ms per step: a 40-token answer streams for ~0.6 s, long enough to read /metrics inside it.
    RADIXSERVE_TEST_STEP_DELAY_MS=15 "$BIN" serve --model "$TMP/tiny-qwen3" --port "$port" --threads 1 \
        --kv-cache-mb 64 $flags >"$TMP/log.$port" 2>&1 &
    PIDS+=($!)
    URLS+=("http://127.0.0.1:$port")
done
for u in "${URLS[@]}"; do wait_ready "$u"; done

$PY - "${URLS[@]}" <<'PYEOF' >"$TMP/tap"
import json, sys, time, urllib.request

urls = sys.argv[1:]
IM_START = 151644

def post(u, path, body, stream=False):
    req = urllib.request.Request(u + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=60)

def metric(u, name):
    for line in urllib.request.urlopen(u + "/metrics", timeout=10).read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None

def tokens(u, msgs, kw):
    return json.load(post(u, "/tokenize", {"messages": msgs, "add_generation_prompt": False, "chat_template_kwargs": kw}))["tokens"]

def history_len(u, msgs, kw):
    """Tokens of the re-sent history: the next prompt up to the new user turn's <|im_start|>."""
    a = tokens(u, msgs + [{"role": "user", "content": "a"}], kw)
    b = tokens(u, msgs + [{"role": "user", "content": "b"}], kw)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    while n > 0 and a[n - 1] != IM_START:
        n -= 1
    return n - 1  # the tokens before that <|im_start|>

def turn(u, msgs, kw, watch):
    body = {"messages": msgs, "max_tokens": 40, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "chat_template_kwargs": kw}
    content, usage, marks = "", None, []
    s0 = metric(u, "radixserve_steps_total") if watch else None
    with post(u, "/v1/chat/completions", body) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            d = json.loads(line[6:])
            if d.get("usage"):
                usage = d["usage"]
            for ch in d.get("choices", []):
                delta = ch.get("delta", {})
                if delta.get("content") or delta.get("reasoning_content"):
                    if watch and not marks:
                        marks.append(steps_warm(u))
                    content += delta.get("content") or ""
                if ch.get("finish_reason") and watch:
                    marks.append(steps_warm(u))
    return content, usage, warm_while_alive(s0, marks, usage)

def steps_warm(u):
    return metric(u, "radixserve_steps_total"), metric(u, "radixserve_warm_steps_total")

def warm_while_alive(s0, marks, usage):
    """Warm steps that ran while the request was alive, from two /metrics reads: A at its first
    streamed token, B at its finish. It was alive for `completion` consecutive steps (one token
    each, the first after s0, the steps count before sending), so of the steps after A only
    those past max(A's steps, s0 + completion) may be warm ones (B may be read after warming
    already resumed). None when there was no first token to bracket."""
    if s0 is None or len(marks) != 2 or not usage:
        return None
    (sa, wa), (sb, wb) = marks
    slack = max(0, sb - max(sa, s0 + usage["completion_tokens"]))
    return max(0, wb - wa - slack)

n = 0
def ok(cond, what):
    global n
    n += 1
    print(("ok" if cond else "not ok"), n, "-", what, flush=True)

def chat(think, si, u, out):
    """One 5-turn chat on server si; out[(think, si)] = (answers, short turns, flat)."""
    kw = {"enable_thinking": think}
    msgs = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Tell me a story about a lighthouse keeper."}]
    got, flat, short, brackets = [], True, [], [0]
    for t in range(5):
        hist = history_len(u, msgs[:-1], kw) if t > 0 else 0
        content, usage, warm_alive = turn(u, msgs, kw, si == 0)
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        got.append(content)
        if t > 0 and cached < hist - 1:
            short.append("turn %d cached %d of history %d" % (t, cached, hist))
        if si == 0 and warm_alive:
            flat = False  # (an empty answer has no first token to bracket: None)
            print("# turn %d: %s warm steps while it was answered (by /metrics bracketing)" % (t, warm_alive))
        brackets[0] += si == 0 and warm_alive is not None
        msgs.append({"role": "assistant", "content": content})
        msgs.append({"role": "user", "content": "And then what happened on day %d?" % (t + 2)})
        time.sleep(1.0)  # the user reads, then replies
    out[(think, si)] = (got, short, flat and (si != 0 or brackets[0] >= 2))

import threading
res = {}
for think in (True, False):  # the three servers at once, each its own chat
    ts = [threading.Thread(target=chat, args=(think, si, u, res)) for si, u in enumerate(urls)]
    for t in ts: t.start()
    for t in ts: t.join()
for think in (True, False):
    mode = "thinking" if think else "non-thinking"
    got0, short0, flat0 = res.get((think, 0), (None, ["no result"], False))
    ok(not short0, "%s, warming on: every turn's cached_tokens >= re-sent history - 1 %s" % (mode, short0))
    # Diagnostic only: /metrics is read by the client at a distance from the steps it brackets;
    # the exact check is test_sched's (published statistics) and invariant 7 in sanitizer builds.
    print("# %s, warming on: %s" % (mode, "no warm step seen while a turn was answered" if flat0 else "warm steps seen while answering (see above)"))
    short1 = res.get((think, 1), (None, [], True))[1]
    print("# %s, warming off: %d of 4 turns below history - 1 (%s)" % (mode, len(short1), "; ".join(short1)))
    ok(all(res.get((think, si), (None,))[0] == got0 for si in (1, 2)) and got0 is not None,
       "%s: answers identical with warming on, warming off and the prefix cache off" % mode)
w, h = metric(urls[0], "radixserve_warm_tokens_computed_total"), metric(urls[0], "radixserve_warm_tokens_hit_total")
w1 = metric(urls[1], "radixserve_warm_tokens_computed_total")
ok(w and h and h > 0 and w1 == 0,
   "metrics: warming computed %s tokens, later hit %s; none with warming off (%s)" % (w, h, w1))
PYEOF
cat "$TMP/tap"
fails=$(grep -c '^not ok' "$TMP/tap")
total=$(grep -c '^ok\|^not ok' "$TMP/tap")
[ "$total" -ge 5 ] || { echo "not ok $((total + 1)) - the driver stopped early"; exit 1; }
[ "$fails" = 0 ]
