#!/usr/bin/python3
"""test_engine_lora.py — LoRA adapters against PEFT's math in PyTorch.

A random-weight F32 model (bench/make_model.py) and random adapters in PEFT's file layout
(bench/make_lora.py: adapter_config.json + adapter_model.safetensors, random A and B). The
reference is refmodel's independent forward pass with every targeted weight replaced by
W + scale * B @ A, scale = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora): what PEFT
computes (its unmerged forward W x + scale * B (A x) is the same function). For each target
set — each of the seven modules alone, all seven, all seven with rslora, an adapter stored in
BF16, a Qwen2 model (q/k/v biases) — `radixserve generate --lora DIR` must give:
  1. every step's logits within 1e-4 of the reference (F32 weights, F32 KV), greedy ids equal;
  2. logits that differ from the base model's by more than 1e-3 (the adapter was applied);
and, with the portable kernels and with chunked prefill on 3 threads, the same bits as the
default run (all seven modules). Then adapters the server must refuse, each with a message
naming the key or tensor: an unknown target module, bias, DoRA, fan_in_fan_out,
layers_to_transform, a target pattern string, a missing tensor, a wrong shape, a tensor of
an unknown name, a tensor of a module not targeted.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodel  # noqa: E402

sys.path.insert(0, os.path.join(refmodel.repo_root(), "bench"))
import make_lora  # noqa: E402

N_STEPS = 8
KEY = {"q_proj": "wq", "k_proj": "wk", "v_proj": "wv", "o_proj": "wo", "gate_proj": "wg",
       "up_proj": "wu", "down_proj": "wd"}


def merged_reference(model_dir, weights, conf):
    """refmodel of model_dir with W + scale * B @ A for every targeted (layer, module)."""
    ref = refmodel.load_hf(model_dir)
    r, alpha = conf["r"], conf["lora_alpha"]
    scale = alpha / (r ** 0.5) if conf.get("use_rslora") else alpha / r
    for i, L in enumerate(ref.layers):
        for m in conf["target_modules"]:
            a = torch.from_numpy(weights[make_lora.tensor_name(i, m, "A")])
            b = torch.from_numpy(weights[make_lora.tensor_name(i, m, "B")])
            L[KEY[m]] = L[KEY[m]] + scale * (b @ a)
    return ref


def run(model_dir, prompt, vocab, logits_path, extra=(), env=None):
    return refmodel.generate(model_dir, prompt, N_STEPS, vocab=vocab, logits_path=logits_path,
                             extra=list(extra) + ["--kv-dtype", "f32"], env=env)


def check_case(tap, base, label, model_dir, prompt, vocab, lora_dir, weights, conf, tmp):
    gen = run(model_dir, prompt, vocab, os.path.join(tmp, "l.bin"), ["--lora", lora_dir])
    if not tap.ok(gen.rc == 0 and gen.logits is not None and len(gen.ids) == N_STEPS,
                  "%s: generate --lora ran %d steps (rc %d) %s" % (label, len(gen.ids), gen.rc,
                                                                   gen.stderr.strip()[-200:])):
        return None
    ref = merged_reference(model_dir, weights, conf)
    want = ref.step_logits(prompt, gen.ids)
    refmodel.check_logits(tap, label, want, gen, refmodel.F32_TOL)
    ref_ids, _ = refmodel.greedy_path(want, gen.ids)
    tap.ok(ref_ids == gen.ids, "%s: greedy ids == the reference's (%s)" % (label, gen.ids))
    n = min(len(base.ids), len(gen.ids))
    # same first step (the prompt's logits): the adapter must move them
    moved = float((base.logits[:1] - gen.logits[:1]).abs().max()) if n else 0.0
    tap.ok(moved > 1e-3, "%s: the adapter changes the prompt's logits (max |diff| %.3g)"
           % (label, moved))
    return gen


def model_case(tap, tmp, name, preset, sets, extra_cfg):
    vocab = 1000
    model_dir = refmodel.make_model(os.path.join(tmp, name), "--preset", preset, "--dtype", "f32",
                                    "--set", "vocab_size=%d" % vocab, "--tokenizer", "", *extra_cfg)
    prompt = [1 + (i * 7919) % (vocab - 1) for i in range(21)]  # crosses a 16-token block
    base = run(model_dir, prompt, vocab, os.path.join(tmp, name + "-base.bin"))
    tap.ok(base.rc == 0, "%s: base model runs" % name)
    for i, (label, kw) in enumerate(sets):
        lora_dir = os.path.join(tmp, "%s-lora%d" % (name, i))
        kw = dict(kw)
        bitwise = kw.pop("bitwise", False)
        weights, conf = make_lora.make(model_dir, lora_dir, seed=100 + i, **kw)
        gen = check_case(tap, base, "%s %s" % (name, label), model_dir, prompt, vocab, lora_dir,
                         weights, conf, tmp)
        if gen is None or not bitwise:
            continue
        for what, extra, env in (("portable kernels", [], {"RADIXSERVE_ISA": "portable"}),
                                 ("chunk 3, 3 threads", ["--chunk", "3", "--threads", "3"], None)):
            other = run(model_dir, prompt, vocab, os.path.join(tmp, "o.bin"),
                        ["--lora", lora_dir] + extra, env)
            if what == "portable kernels":  # another table may round differently: 1e-4
                ok = other.logits is not None and float(
                    (other.logits - gen.logits).abs().max()) <= refmodel.F32_TOL
            else:
                ok = other.logits is not None and torch.equal(other.logits, gen.logits)
            tap.ok(ok, "%s %s: %s %s" % (name, label, what,
                                          "within 1e-4" if what == "portable kernels"
                                          else "bit-identical"))


def expect_refused(tap, tmp, model_dir, label, edit, needle):
    """An adapter edited by edit(dir, conf) -> conf must be refused naming needle."""
    d = os.path.join(tmp, "bad-" + label.replace(" ", "-"))
    _, conf = make_lora.make(model_dir, d, r=4, targets=["q_proj", "v_proj"], seed=7)
    conf = edit(d, conf)
    if conf is not None:
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump(conf, f)
    gen = refmodel.generate(model_dir, [1, 2, 3], 2, extra=["--lora", d])
    tap.ok(gen.rc != 0 and needle in gen.stderr and "Segmentation" not in gen.stderr,
           "refused: %s (rc %d, %r)" % (label, gen.rc, gen.stderr.strip()[-240:]))


def rewrite_tensors(d, fn):
    """Rewrite d's adapter_model.safetensors through fn(list of (name, array)) -> list."""
    path = os.path.join(d, "adapter_model.safetensors")
    t = refmodel.read_safetensors(path)
    items = fn([(k, v.numpy()) for k, v in t.items()])
    make_lora.write_safetensors(path, items, "f32")


def error_cases(tap, tmp):
    model_dir = refmodel.make_model(os.path.join(tmp, "errs"), "--preset", "tiny-qwen3",
                                    "--dtype", "f32", "--set", "vocab_size=300", "--tokenizer", "")
    a_q0 = make_lora.tensor_name(0, "q_proj", "A")
    cases = [
        ("unknown target module", lambda d, c: {**c, "target_modules": ["q_proj", "lm_head"]},
         "lm_head"),
        ("bias all", lambda d, c: {**c, "bias": "all"}, "bias"),
        ("DoRA", lambda d, c: {**c, "use_dora": True}, "use_dora"),
        ("fan_in_fan_out", lambda d, c: {**c, "fan_in_fan_out": True}, "fan_in_fan_out"),
        ("layers_to_transform", lambda d, c: {**c, "layers_to_transform": [0]},
         "layers_to_transform"),
        ("target pattern string", lambda d, c: {**c, "target_modules": ".*proj"},
         "target_modules"),
        ("r of 0", lambda d, c: {**c, "r": 0}, "r must be"),
        ("missing tensor", lambda d, c: rewrite_tensors(
            d, lambda ts: [x for x in ts if x[0] != a_q0]), a_q0),
        ("wrong shape (config r 8, tensors r 4)", lambda d, c: {**c, "r": 8}, "shape"),
        ("unknown tensor", lambda d, c: rewrite_tensors(
            d, lambda ts: ts + [("base_model.model.lm_head.lora_A.weight", ts[0][1])]),
         "base_model.model.lm_head.lora_A.weight"),
        ("module not targeted", lambda d, c: {**c, "target_modules": ["q_proj"]},
         "v_proj is not in target_modules"),
        ("no adapter_config.json", lambda d, c: os.remove(os.path.join(d, "adapter_config.json")),
         "adapter_config.json"),
    ]
    for label, edit, needle in cases:
        expect_refused(tap, tmp, model_dir, label, edit, needle)


def main():
    tap = refmodel.Tap()
    if not os.path.exists(refmodel.binary()):
        tap.skip("no binary at %s" % refmodel.binary())
        tap.done()
    tmp = refmodel.scratch(tap, "lora")
    sets = [("%s alone" % m, {"targets": [m], "r": 3 + i}) for i, m in enumerate(make_lora.MODULES)]
    sets += [("all seven r 16", {"r": 16, "alpha": 32.0, "bitwise": True}),
             ("all seven rslora r 8", {"r": 8, "alpha": 16.0, "rslora": True}),
             ("all seven bf16-stored r 5", {"r": 5, "alpha": 10.0, "dtype": "bf16"})]
    model_case(tap, tmp, "qwen3", "tiny-qwen3", sets, [])
    model_case(tap, tmp, "qwen2-bias", "tiny-qwen2",
               [("all seven r 6", {"r": 6, "alpha": 12.0, "dtype": "f16"})], [])
    error_cases(tap, tmp)
    tap.done()


if __name__ == "__main__":
    main()
