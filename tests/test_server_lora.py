#!/usr/bin/python3
"""test_server_lora.py — LoRA adapters through the HTTP server.

A tiny random Qwen3 model in F32 (bench/make_model.py, the Qwen3 tokenizer) served with two
PEFT adapters from start-up (--lora a=DIR --lora b=DIR, bench/make_lora.py) checks:
  - /v1/models lists the base model and each adapter, the adapters with `parent` = the base id;
  - a greedy completion under an adapter gives exactly the text `radixserve generate --lora DIR`
    gives (the engine's output is checked against PyTorch by test_engine_lora.py), and another
    text than the base model's;
  - requests under a, b and the base sent together (batched in the same steps) give each the
    text and logprobs it gets alone;
  - the prefix cache's namespace includes the adapter: a prompt cached under the base model is
    0 cached tokens under a, then cached again under a (all but its last token), 0 under b;
    cache_salt still separates within an adapter;
  - run-time POST /v1/load_lora_adapter / /v1/unload_lora_adapter (vLLM's bodies): load, use,
    refuse a duplicate, a bad path, an unsupported config, a missing field; unload an unknown
    name is a 404; after an unload the name is a 404 model_not_found and gone from /v1/models;
  - under load (requests on the base, a and c running while c is unloaded): every request
    answers 200, except requests for c sent after its unload began, which get 404
    model_not_found; the unload answers only after every request running under c finished;
    c loaded again serves again;
  - with next-turn warming on, a chat under c leaves a warming job holding c; while the server
    is busy (so warming cannot run) unloading c returns at once: the job is dropped, not waited
    for (without that, the unload waited for the busy request to end).
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodel  # noqa: E402

sys.path.insert(0, os.path.join(refmodel.repo_root(), "bench"))
import make_lora  # noqa: E402

PROMPT = [(7 * i + 11) % 900 + 3 for i in range(40)]


def request(url, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def serve(model_dir, loras, log_path, env=None, warm=0):
    args = ["--model", model_dir, "--threads", "1", "--kv-cache-mb", "32", "--served-model-name",
            "base", "--warm-next-turn", str(warm)]
    for name, d in loras:
        args += ["--lora", "%s=%s" % (name, d)]
    return refmodel.start_server(args, log_path, env)


def complete(url, model, prompt=PROMPT, n=8, salt=None, logprobs=False):
    body = {"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0,
            "ignore_eos": True}
    if salt:
        body["cache_salt"] = salt
    if logprobs:
        body["logprobs"] = 1
    return request(url + "/v1/completions", body)


def text_of(r):
    return r["choices"][0]["text"] if isinstance(r, dict) and r.get("choices") else None


def cached_of(r):
    try:
        return r["usage"]["prompt_tokens_details"]["cached_tokens"]
    except (KeyError, TypeError):
        return None


def cli_text(model_dir, lora_dir, n=8):
    extra = ["--lora", lora_dir] if lora_dir else []
    p = subprocess.run([refmodel.binary(), "generate", "--model", model_dir, "--prompt-ids",
                        ",".join(map(str, PROMPT)), "-n", str(n), "--temperature", "0",
                        "--ignore-eos", "--kv-dtype", "f32"] + extra,
                       capture_output=True, text=True, timeout=120)
    return p.stdout[:-1] if p.returncode == 0 and p.stdout.endswith("\n") else None


def check_models(tap, url):
    st, r = request(url + "/v1/models")
    ids = {m["id"]: m for m in r.get("data", [])} if st == 200 else {}
    tap.ok(set(ids) == {"base", "a", "b"} and "parent" not in ids["base"] and
           ids["a"].get("parent") == "base" and ids["b"].get("parent") == "base",
           "/v1/models lists base, a and b, the adapters with parent base (%s)"
           % sorted(ids))
    st, m = request(url + "/v1/models/a")
    tap.ok(st == 200 and m.get("id") == "a" and m.get("parent") == "base",
           "/v1/models/a answers the adapter (%d)" % st)
    st, e = complete(url, "zzz")
    tap.ok(st == 404 and e["error"]["code"] == "model_not_found",
           "an unknown model is a 404 model_not_found")


def check_outputs(tap, url, model_dir, dirs):
    want = {name: cli_text(model_dir, d) for name, d in [("base", None)] + dirs}
    got = {}
    for name in want:
        st, r = complete(url, name)
        got[name] = text_of(r)
        tap.ok(st == 200 and r.get("model") == name and got[name] == want[name],
               "model %s: the greedy text == generate%s (%r)"
               % (name, " --lora" if name != "base" else "", got[name]))
    tap.ok(len(set(got.values())) == 3, "a, b and the base give three different texts")
    alone = {name: complete(url, name, n=16, logprobs=True)[1] for name in ("a", "base", "b")}
    results = {}

    def run(name, k):
        results[(name, k)] = complete(url, name, n=16, logprobs=True)

    threads = [threading.Thread(target=run, args=(name, k)) for k in range(2)
               for name in ("a", "base", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = all(st == 200 and r["choices"][0]["text"] == alone[name]["choices"][0]["text"] and
               r["choices"][0]["logprobs"]["token_logprobs"] ==
               alone[name]["choices"][0]["logprobs"]["token_logprobs"]
               for (name, _), (st, r) in results.items())
    tap.ok(same, "a, base and b sent together (6 requests) == each alone: text and logprobs")


def check_cache(tap, url):
    prompt = [(13 * i + 5) % 800 + 7 for i in range(33)]
    seq = [("base", None, 0), ("base", None, 32), ("a", None, 0), ("a", None, 32),
           ("b", None, 0), ("base", None, 32), ("a", "s1", 0), ("a", "s1", 32), ("a", None, 32)]
    for name, salt, want in seq:
        st, r = complete(url, name, prompt=prompt, n=2, salt=salt)
        tap.ok(st == 200 and cached_of(r) == want,
               "cache: model %s%s: %s cached tokens (want %d)"
               % (name, " salt " + salt if salt else "", cached_of(r), want))


def check_runtime(tap, url, model_dir, tmp):
    c_dir = os.path.join(tmp, "lora-c")
    make_lora.make(model_dir, c_dir, r=6, alpha=12, targets=["k_proj", "o_proj", "up_proj"],
                   seed=33)
    bad_dir = os.path.join(tmp, "lora-dora")
    make_lora.make(model_dir, bad_dir, r=4, seed=34, extra={"use_dora": True})
    load, unload = url + "/v1/load_lora_adapter", url + "/v1/unload_lora_adapter"
    st, r = request(load, {"lora_name": "c", "lora_path": c_dir})
    tap.ok(st == 200 and "Success" in str(r), "load_lora_adapter c: 200 (%s)" % r)
    st, r = complete(url, "c")
    want = cli_text(model_dir, c_dir)
    tap.ok(st == 200 and text_of(r) == want, "model c serves generate --lora's text")
    st, r = request(url + "/v1/models")
    tap.ok("c" in [m["id"] for m in r.get("data", [])], "/v1/models lists c")
    cases = [({"lora_name": "c", "lora_path": c_dir}, 400, "already loaded"),
             ({"lora_name": "d", "lora_path": os.path.join(tmp, "nowhere")}, 400, "nowhere"),
             ({"lora_name": "d", "lora_path": bad_dir}, 400, "use_dora"),
             ({"lora_name": "base", "lora_path": c_dir}, 400, "base model"),
             ({"lora_path": c_dir}, 400, "lora_name"),
             ({"lora_name": "d"}, 400, "lora_path"),
             ({"lora_name": "bad name", "lora_path": c_dir}, 400, "name")]
    for body, status, needle in cases:
        st, e = request(load, body)
        msg = e.get("error", {}).get("message", "") if isinstance(e, dict) else ""
        tap.ok(st == status and needle in msg,
               "load %s: %d with an error naming %r (%d: %s)" % (json.dumps(body)[:80], status,
                                                                 needle, st, msg[:120]))
    st, e = request(unload, {"lora_name": "nope"})
    tap.ok(st == 404 and e["error"]["code"] == "model_not_found", "unload of nope: 404")
    st, r = request(unload, {"lora_name": "c"})
    tap.ok(st == 200, "unload_lora_adapter c: 200")
    st, e = complete(url, "c")
    tap.ok(st == 404 and e["error"]["code"] == "model_not_found",
           "after the unload, model c is a 404 model_not_found")
    st, r = request(url + "/v1/models")
    tap.ok("c" not in [m["id"] for m in r.get("data", [])], "and gone from /v1/models")
    return c_dir


def check_under_load(tap, url, c_dir):
    """Unload c while requests on base, a and c run; more c requests arrive during it."""
    load, unload = url + "/v1/load_lora_adapter", url + "/v1/unload_lora_adapter"
    st, _ = request(load, {"lora_name": "c", "lora_path": c_dir})
    tap.ok(st == 200, "c loaded again")
    out, lock = [], threading.Lock()
    unload_began = []

    def run(model, k):
        t0 = time.time()
        st, r = complete(url, model, prompt=PROMPT[: 10 + k], n=24)
        with lock:
            out.append((model, t0, time.time(), st, r))

    first = [threading.Thread(target=run, args=(m, k)) for k in range(3) for m in ("base", "a", "c")]
    for t in first:
        t.start()
    time.sleep(0.4)  # they are running (24 steps of >= 20 ms each)
    unload_began.append(time.time())
    res = {}

    def do_unload():
        res["st"], res["r"] = request(unload, {"lora_name": "c"})
        res["t"] = time.time()

    ut = threading.Thread(target=do_unload)
    ut.start()
    time.sleep(0.1)
    late = [threading.Thread(target=run, args=(m, 5 + k)) for k in range(2) for m in ("c", "a")]
    for t in late:
        t.start()
    for t in first + late:
        t.join()
    ut.join()
    bad = []
    for model, t0, t1, st, r in out:
        ok = st == 200 or (st == 404 and model == "c" and t0 >= unload_began[0] and
                           r["error"]["code"] == "model_not_found")
        if not ok:
            bad.append((model, st, str(r)[:100]))
    n_404 = sum(1 for o in out if o[3] == 404)
    c_ok = [o for o in out if o[0] == "c" and o[3] == 200]
    tap.ok(not bad and len(out) == 13,
           "under load: all %d requests answered 200 but %d late c requests (404 "
           "model_not_found); problems: %s" % (len(out), n_404, bad or "none"))
    tap.ok(n_404 == 2 and len(c_ok) == 3,
           "the 3 running c requests finished (200), the 2 sent after the unload began got 404")
    tap.ok(res.get("st") == 200 and all(res["t"] >= o[2] - 0.05 for o in c_ok) and
           any(o[2] > unload_began[0] for o in c_ok),
           "the unload answered only after the running c requests finished (some finished "
           "after it began: it waited)")
    st, _ = request(load, {"lora_name": "c", "lora_path": c_dir})
    st2, r = complete(url, "c")
    tap.ok(st == 200 and st2 == 200, "c loaded a third time serves again")


def check_warm_unload(tap, url, c_dir):
    """A chat under c leaves a next-turn warming job holding c; while a base request keeps the
    server busy (so warming cannot run), unloading c must not wait for that job."""
    load, unload = url + "/v1/load_lora_adapter", url + "/v1/unload_lora_adapter"
    st, _ = request(load, {"lora_name": "c", "lora_path": c_dir})
    done = {}

    def busy():
        done["st"], _ = complete(url, "base", n=150)
        done["t"] = time.time()

    t = threading.Thread(target=busy)
    t.start()
    time.sleep(0.3)
    st2, r = request(url + "/v1/chat/completions",
                     {"model": "c", "messages": [{"role": "user", "content": "Hi there"}],
                      "max_tokens": 2, "temperature": 0})
    st3, _ = request(unload, {"lora_name": "c"}, timeout=60)
    t_unload = time.time()
    t.join()
    tap.ok(st == 200 and st2 == 200 and st3 == 200 and done.get("st") == 200 and
           t_unload < done["t"],
           "unload of c with c's next-turn warming job queued behind a busy server returns at "
           "once (%.2f s before the busy request ended)" % (done.get("t", 0) - t_unload))


def main():
    tap = refmodel.Tap()
    if not os.access(refmodel.binary(), os.X_OK):
        tap.ok(False, "binary %s exists (build it first)" % refmodel.binary())
        tap.done()
    tmp = refmodel.scratch(tap, "server-lora")
    model_dir = refmodel.make_model(os.path.join(tmp, "model"), "--preset", "tiny-qwen3",
                                    "--dtype", "f32", "--seed", "9")
    dirs = [("a", os.path.join(tmp, "lora-a")), ("b", os.path.join(tmp, "lora-b"))]
    make_lora.make(model_dir, dirs[0][1], r=8, alpha=16, seed=31)
    make_lora.make(model_dir, dirs[1][1], r=4, alpha=8, targets=["q_proj", "v_proj"],
                   rslora=True, seed=32)
    proc, url = serve(model_dir, dirs, os.path.join(tmp, "log"))
    try:
        if not tap.ok(proc.poll() is None, "serve --lora a=DIR --lora b=DIR starts"):
            tap.diag(open(os.path.join(tmp, "log")).read()[-2000:])
            tap.done()
        check_models(tap, url)
        check_outputs(tap, url, model_dir, dirs)
        check_cache(tap, url)
        c_dir = check_runtime(tap, url, model_dir, tmp)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # a second server whose steps are slow, so requests surely overlap the unload
    proc, url = serve(model_dir, dirs, os.path.join(tmp, "log-load"),
                      {"RADIXSERVE_TEST_STEP_DELAY_MS": "20"})
    try:
        check_under_load(tap, url, c_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # warming on: a queued warming job must not hold an unload up
    proc, url = serve(model_dir, dirs, os.path.join(tmp, "log-warm"),
                      {"RADIXSERVE_TEST_STEP_DELAY_MS": "20"}, warm=1)
    try:
        check_warm_unload(tap, url, c_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    bad = subprocess.run([refmodel.binary(), "serve", "--model", model_dir, "--port", "0",
                          "--lora", "x=" + os.path.join(tmp, "lora-dora-missing")],
                         capture_output=True, text=True, timeout=60)
    tap.ok(bad.returncode != 0 and "--lora x=" in bad.stderr,
           "serve with a --lora that cannot load exits with a message naming it (%s)"
           % bad.stderr.strip().splitlines()[-1:] if bad.stderr.strip() else "")
    tap.done()


if __name__ == "__main__":
    main()
