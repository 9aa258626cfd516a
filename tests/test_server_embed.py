#!/usr/bin/python3
"""test_server_embed.py — POST /v1/embeddings against the independent PyTorch reference.

A tiny random Qwen3 model in F32 (bench/make_model.py) is served twice: as written (no
modules.json: mean pooling, normalised) and with sentence-transformers' modules.json,
1_Pooling/config.json (pooling_mode_lasttoken, as Qwen3-Embedding ships) and a Normalize module.
For each, every vector the server returns must equal, within 1e-4, the reference's final-normed
hidden states (tests/refmodel.py, Model.hidden) pooled (mean over all tokens / the last token) and
L2-normalised. The server runs with --token-budget 16, so the 45-token input is prefilled in
three chunks (mean pooling sums across steps) and batched with the other inputs in the same
steps. Also: base64 decodes to the float vectors; `dimensions` truncates then renormalises; a
repeated input (served from the prefix cache under last-token pooling) gives the same vector;
text inputs pool over the ids /tokenize reports; bad input is a 400 naming the field.
"""

import base64
import json
import os
import shutil
import struct
import sys
import threading
import time
import urllib.error
import urllib.request

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodel  # noqa: E402

TOL = 1e-4


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def serve(model_dir, log_path):
    return refmodel.start_server(["--model", model_dir, "--threads", "1", "--kv-cache-mb", "16",
                                  "--token-budget", "16"], log_path)


def pooled(ref, ids, pooling):
    h = ref.hidden(ids).to(torch.float64)
    v = h.mean(0) if pooling == "mean" else h[-1]
    return v / max(float(v.norm()), 1e-12)


def max_diff(got, want):
    return float((torch.tensor(got, dtype=torch.float64) - want).abs().max())


def check_model(tap, ref, model_dir, pooling, tmp):
    proc, url = serve(model_dir, os.path.join(tmp, "log-" + pooling))
    try:
        inputs = [[1, 2, 3, 4, 5], [(7 * i + 11) % 900 + 3 for i in range(45)], [42]]
        text = "Once upon a time, there was a tiny model."
        st, tok = post(url + "/tokenize", {"prompt": text})
        text_ids = tok.get("tokens", [])
        st, r = post(url + "/v1/embeddings", {"input": inputs, "model": ""})
        ok = st == 200 and len(r.get("data", [])) == 3
        tap.ok(ok, "%s: three id inputs answered (%d)" % (pooling, st))
        if not ok:
            tap.diag(json.dumps(r)[:400])
            return
        for i, ids in enumerate(inputs):
            d = max_diff(r["data"][i]["embedding"], pooled(ref, ids, pooling))
            tap.ok(r["data"][i]["index"] == i and d < TOL,
                   "%s: input %d (%d tokens) == the PyTorch reference (max diff %.2e)"
                   % (pooling, i, len(ids), d))
        tap.ok(r["usage"]["prompt_tokens"] == sum(len(x) for x in inputs),
               "%s: usage.prompt_tokens counts every input (%s)" % (pooling, r["usage"]))
        st, t = post(url + "/embeddings", {"input": text})
        d = max_diff(t["data"][0]["embedding"], pooled(ref, text_ids, pooling)) if st == 200 else 1
        tap.ok(st == 200 and len(text_ids) > 3 and d < TOL,
               "%s: a text input pools over its /tokenize ids (%d tokens, max diff %.2e)"
               % (pooling, len(text_ids), d))
        st, b = post(url + "/v1/embeddings", {"input": inputs[1], "encoding_format": "base64"})
        raw = base64.b64decode(b["data"][0]["embedding"]) if st == 200 else b""
        vec = list(struct.unpack("<%df" % (len(raw) // 4), raw))
        as_f32 = list(struct.unpack("<%df" % len(r["data"][1]["embedding"]),
                                    struct.pack("<%df" % len(r["data"][1]["embedding"]),
                                                *r["data"][1]["embedding"])))
        cached = b["usage"]["prompt_tokens_details"]["cached_tokens"] if st == 200 else None
        tap.ok(cached == (44 if pooling == "last" else 0),  # all but the last of 45 tokens
               "%s: the repeat %s the prefix cache (cached tokens %s)"
               % (pooling, "is served from" if pooling == "last" else "skips", cached))
        tap.ok(st == 200 and len(vec) == 64 and vec == as_f32,
               "%s: base64 decodes to the float vector's float32 values (a repeat of input 1, "
               "alone this time: batch-invariant)" % pooling)
        st, s = post(url + "/v1/embeddings", {"input": [inputs[1]], "dimensions": 16})
        full = pooled(ref, inputs[1], pooling)
        want = full[:16] / full[:16].norm()
        d = max_diff(s["data"][0]["embedding"], want) if st == 200 else 1
        tap.ok(st == 200 and len(s["data"][0]["embedding"]) == 16 and d < TOL,
               "%s: dimensions 16 truncates then renormalises (max diff %.2e)" % (pooling, d))
        # Beside a running generation (same scheduler steps): the same bits as alone.
        gen = threading.Thread(target=post, args=(url + "/v1/completions",
                                                  {"prompt": [5, 6, 7], "max_tokens": 200,
                                                   "ignore_eos": True, "temperature": 0}))
        gen.start()
        time.sleep(0.05)
        st, m = post(url + "/v1/embeddings", {"input": inputs})
        gen.join()
        tap.ok(st == 200 and [d["embedding"] for d in m["data"]] ==
               [d["embedding"] for d in r["data"]],
               "%s: embeddings batched beside a generation equal them alone" % pooling)
        for body, param in [({"input": []}, "input"), ({"input": ""}, "input"),
                            ({"input": [[1], [-1]]}, "input"), ({"input": "x", "dimensions": 65},
                                                                  "dimensions"),
                            ({"input": "x", "encoding_format": "f16"}, "encoding_format"),
                            ({"input": [999999]}, "input")]:
            st, e = post(url + "/v1/embeddings", body)
            tap.ok(st == 400 and e.get("error", {}).get("param") == param,
                   "%s: %s is a 400 naming %s (%s)" % (pooling, json.dumps(body), param,
                                                        e.get("error", {}).get("message")))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    tap = refmodel.Tap()
    tmp = refmodel.scratch(tap, "server-embed")
    if not os.access(refmodel.binary(), os.X_OK):
        tap.ok(False, "binary %s exists (build it first)" % refmodel.binary())
        tap.done()
    mean_dir = refmodel.make_model(os.path.join(tmp, "mean"), "--preset", "tiny-qwen3", "--dtype",
                                   "f32", "--seed", "5")
    last_dir = os.path.join(tmp, "last")
    shutil.copytree(mean_dir, last_dir)
    with open(os.path.join(last_dir, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize"}], f)
    os.makedirs(os.path.join(last_dir, "1_Pooling"))
    with open(os.path.join(last_dir, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 64, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": False, "pooling_mode_lasttoken": True,
                   "include_prompt": True}, f)
    ref = refmodel.load_hf(mean_dir)
    check_model(tap, ref, mean_dir, "mean", tmp)
    check_model(tap, ref, last_dir, "last", tmp)
    tap.done()


if __name__ == "__main__":
    main()
