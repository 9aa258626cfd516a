#!/usr/bin/python3
"""test_engine_reference.py — the C forward pass against the independent PyTorch reference.

For small random-weight models covering each thing the loader and forward pass must get right
(F32, BF16 and F16 weights; tied and untied LM head; hidden != heads * head_dim; GQA and plain
multi-head attention; a non-default rope_theta; the real Qwen3 vocabulary of 151,936; Qwen3 q/k
norms, Qwen2 q/k/v biases, Llama; prompts crossing KV block boundaries), run

    $BIN generate --model DIR --prompt-ids ... -n 32 --temperature 0 --top-logits 2 --logits-out F

with the portable kernels and the CPU's default ones, and the KV cache in F32 and BF16, and check:
  1. greedy ids == the reference's own greedy decoding: all 32 for F32 weights and KV; with any
     BF16/F16 rounding, until the first step where they differ, which must be a step where the
     reference's top-two gap is under 0.2 (a near-tie may go either way; the line says where
     the sequences parted). The reference's greedy path is read off its teacher-forced pass over
     the binary's ids (refmodel.greedy_path): while the ids agree that pass computes exactly
     what recomputing step by step would, at a fraction of the cost;
  2. every step's logits are within 1e-4 (exact F32 path) or 1e-1 (any BF16/F16 rounding) of the
     reference's logits for the same sequence (teacher-forced on the binary's own ids, so this
     covers all steps even after a near-tie);
  3. with the portable kernels, which compute in F32 from exactly upcast weights, every run is
     within 1e-4 of the reference (F32 KV) or 1e-2 of a reference that rounds K/V to BF16 as
     the run's KV cache does (BF16 KV);
  4. the binary's --top-logits lines agree with its --logits-out file and name its argmax;
  5. chunked prefill on another thread count (--chunk 3 --threads 3) gives bit-identical logits;
and that a model split into shards + model.safetensors.index.json gives the single file's bits,
that generation stops right after an EOS id as the reference does (and --ignore-eos runs on).
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodel  # noqa: E402

N_STEPS = 32
F32_TOL, LOW_TOL, KV_TOL = refmodel.F32_TOL, refmodel.LOW_TOL, refmodel.KV_TOL

# name, preset, weight dtype, config overrides, prompt length
CASES = [
    # tied, hidden 64 != 4 heads x 32, GQA 4:2, the real vocabulary
    ("qwen3-f32-vocab151936", "tiny-qwen3", "f32", [], 9),
    ("qwen3-bf16-vocab151936", "tiny-qwen3", "bf16", [], 9),
    # untied, 6 heads x 16 = 96 != 64, GQA 6:2, rope_theta 5000, 3 layers, prompt over a block
    ("qwen3-f32-untied", "tiny-qwen3", "f32",
     ["vocab_size=1000", "tie_word_embeddings=false", "num_attention_heads=6",
      "num_key_value_heads=2", "head_dim=16", "rope_theta=5000", "num_hidden_layers=3"], 20),
    ("qwen3-bf16-untied", "tiny-qwen3", "bf16",
     ["vocab_size=1000", "tie_word_embeddings=false", "num_attention_heads=6",
      "num_key_value_heads=2", "head_dim=16", "rope_theta=5000", "num_hidden_layers=3"], 20),
    ("qwen3-f16", "tiny-qwen3", "f16", ["vocab_size=1000"], 9),
    # q/k/v biases
    ("qwen2-f32", "tiny-qwen2", "f32", ["vocab_size=1000"], 17),
    ("qwen2-bf16-untied", "tiny-qwen2", "bf16",
     ["vocab_size=1000", "tie_word_embeddings=false"], 17),
    # no q/k norm; plain multi-head attention; rope_theta 10000
    ("llama-f32-untied-mha", "tiny-llama", "f32", ["vocab_size=1000", "num_key_value_heads=4"], 12),
    ("llama-bf16-tied", "tiny-llama", "bf16", ["vocab_size=1000", "tie_word_embeddings=true"], 12),
    # long prompts: RoPE at positions up to ~730, attention over 20-45 KV blocks
    ("qwen3-f32-long-prompt", "tiny-qwen3", "f32", ["vocab_size=1000"], 700),
    ("llama-bf16-long-prompt", "tiny-llama", "bf16", ["vocab_size=1000"], 300),
    # Qwen3-0.6B's layer shapes (hidden 1024, 16 x 128 heads, 8 KV heads, MLP 3072), one layer:
    # dot products over K = 1024, 2048 and 3072 cross every kernel's K blocking
    ("qwen3-f32-layer-of-0.6b", "qwen3-0.6b", "f32",
     ["vocab_size=1000", "num_hidden_layers=1"], 18),
    ("qwen3-bf16-layer-of-0.6b", "qwen3-0.6b", "bf16",
     ["vocab_size=1000", "num_hidden_layers=1"], 18),
]


def prompt_for(index, length, vocab):
    """Deterministic, spread-out prompt ids (none is 0, none repeats the neighbour)."""
    return [1 + (index * 131 + i * 7919) % (vocab - 1) for i in range(length)]


def check_run(tap, label, ref, prompt, gen, eos, exact, isa, kv):
    """Checks 1-4 of the module comment on one run; False if the run itself failed."""
    ran = (gen.rc == 0 and gen.ids and gen.logits is not None
           and gen.logits.shape[0] == len(gen.ids) == len(gen.tops)
           and (len(gen.ids) == N_STEPS or gen.ids[-1] in eos))
    if not tap.ok(ran, "%s: generate exits 0 with %d steps (or up to an EOS), one --top-logits "
                  "line and one logits row each (rc %d, %d ids)"
                  % (label, N_STEPS, gen.rc, len(gen.ids))):
        tap.diag(gen.stderr[-1500:])
        return False
    want = ref.step_logits(prompt, gen.ids)
    ref_ids, gaps = refmodel.greedy_path(want, gen.ids, eos)
    refmodel.check_ids(tap, label, gen.ids, ref_ids, gaps, exact)
    refmodel.check_logits(tap, label, want, gen, F32_TOL if exact else LOW_TOL)
    if isa == "portable" and not exact:
        # the portable kernels compute in F32 from exactly upcast weights: the only rounding
        # left is the KV cache's, which the reference can do too
        if kv == "bf16":
            want = ref.step_logits(prompt, gen.ids, kv_bf16=True)
        refmodel.check_logits(tap, label + " (F32 compute)", want, gen,
                              KV_TOL if kv == "bf16" else F32_TOL, kv_bf16=kv == "bf16")
    refmodel.check_self_consistent(tap, label, gen)
    return True


def run_case(tap, tmp, index, case):
    name, preset, dtype, sets, plen = case
    model_dir = os.path.join(tmp, name)
    args = ["--preset", preset, "--dtype", dtype, "--seed", str(11 + index)]
    for s in sets:
        args += ["--set", s]
    refmodel.make_model(model_dir, *args)
    ref = refmodel.load_hf(model_dir)
    vocab = ref.arch["vocab"]
    prompt = prompt_for(index, plen, vocab)
    eos = refmodel.eos_ids(model_dir)
    logits_path = os.path.join(tmp, name + ".logits")
    model_kv = "f32" if dtype == "f32" else "bf16"
    for isa in ("portable", "default"):
        for kv in (model_kv, "bf16" if model_kv == "f32" else "f32"):
            label = "%s isa=%s kv=%s" % (name, isa, kv)
            env = {"RADIXSERVE_ISA": "portable" if isa == "portable" else None}
            gen = refmodel.generate(model_dir, prompt, N_STEPS, vocab=vocab, env=env,
                                    extra=["--kv-dtype", kv], logits_path=logits_path)
            ok = check_run(tap, label, ref, prompt, gen, eos, dtype == "f32" and kv == "f32",
                           isa, kv)
            if ok and isa == "default" and kv == model_kv:
                check_invariance(tap, label, model_dir, prompt, vocab, gen, logits_path)


def check_invariance(tap, label, model_dir, prompt, vocab, whole, logits_path):
    """The prompt prefilled 3 tokens at a time on 3 threads (a count no default run uses on
    1 or 2 cores) gives the same bits as the default run (whole prompt, one thread per CPU)."""
    gen = refmodel.generate(model_dir, prompt, N_STEPS, vocab=vocab,
                            env={"RADIXSERVE_ISA": None}, extra=["--chunk", "3", "--threads", "3"],
                            logits_path=logits_path)
    same = (gen.rc == 0 and gen.ids == whole.ids and gen.logits is not None
            and torch.equal(gen.logits, whole.logits))
    tap.ok(same, "%s: --chunk 3 --threads 3 gives the same ids and bit-identical logits" % label)


def check_shards(tap, tmp):
    """The same weights as index + 3 shards give the bits of the single file (the shard path of
    the loader reads every tensor from the right file at the right offset)."""
    args = ["--preset", "tiny-qwen2", "--dtype", "bf16", "--seed", "7", "--set", "vocab_size=1000",
            "--set", "tie_word_embeddings=false", "--tokenizer", ""]
    runs = []
    for shards in ("1", "3"):
        model_dir = refmodel.make_model(os.path.join(tmp, "shards-" + shards), *args,
                                        "--shards", shards)
        runs.append(refmodel.generate(model_dir, prompt_for(3, 11, 1000), 8, vocab=1000,
                                      logits_path=os.path.join(tmp, "shards-%s.logits" % shards)))
    one, three = runs
    n_files = len([f for f in os.listdir(os.path.join(tmp, "shards-3")) if f.startswith("model-")])
    same = (one.rc == 0 and three.rc == 0 and n_files == 3 and one.ids == three.ids
            and one.logits is not None and torch.equal(one.logits, three.logits))
    tap.ok(same, "qwen2 bf16 as %d shards + index: same ids and bit-identical logits as one file "
           "(rc %d/%d)" % (n_files, one.rc, three.rc))
    if not same:
        tap.diag(three.stderr[-1000:])


def check_eos(tap, tmp):
    """Generation stops right after an EOS id of generation_config.json, and the reference's
    greedy decoding stops at the same place; --ignore-eos runs on."""
    model_dir = refmodel.make_model(os.path.join(tmp, "eos"), "--preset", "tiny-llama", "--dtype",
                                    "f32", "--seed", "9", "--set", "vocab_size=1000",
                                    "--tokenizer", "")
    prompt = prompt_for(9, 10, 1000)
    free = refmodel.generate(model_dir, prompt, N_STEPS, vocab=1000)
    # the first id that did not occur before it, past step 4: generation must stop right there
    stop = next((i for i in range(5, len(free.ids)) if free.ids[i] not in free.ids[:i]), None)
    if not tap.ok(free.rc == 0 and stop is not None, "eos: a run without EOS gives %d ids with a "
                  "fresh id past step 4 (rc %d)" % (len(free.ids), free.rc)):
        return
    eos = free.ids[stop]
    with open(os.path.join(model_dir, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [eos]}, f)
    ref = refmodel.load_hf(model_dir)
    ref_ids, _, _ = ref.greedy(prompt, N_STEPS, eos=refmodel.eos_ids(model_dir))
    stopped = refmodel.generate(model_dir, prompt, N_STEPS, vocab=1000)
    tap.ok(stopped.rc == 0 and stopped.ids == free.ids[: stop + 1] == ref_ids,
           "eos: with eos_token_id %d generation stops after it, at step %d, as the reference "
           "does (binary %d ids, reference %d)" % (eos, stop, len(stopped.ids), len(ref_ids)))
    ignored = refmodel.generate(model_dir, prompt, N_STEPS, vocab=1000, extra=["--ignore-eos"])
    tap.ok(ignored.rc == 0 and ignored.ids == free.ids,
           "eos: --ignore-eos generates all %d tokens (%d)" % (N_STEPS, len(ignored.ids)))


def check_model_writer(tap, tmp):
    """bench/make_model.py itself: the benchmark preset's parameter count, and BF16 storage is
    the round-to-nearest-even of the F32 values of the same seed (torch's own conversion)."""
    writer = refmodel.load_make_model()
    cfg = dict(writer.PRESETS["qwen3-0.6b"])
    n = sum(math.prod(shape) for _, shape, _ in writer.tensor_specs(cfg))
    tap.ok(n == 596049920, "make_model: the qwen3-0.6b preset has %s parameters (want 596,049,920)"
           % format(n, ","))
    dirs = {}
    for dtype in ("f32", "bf16"):
        dirs[dtype] = refmodel.make_model(os.path.join(tmp, "writer-" + dtype), "--preset",
                                          "tiny-llama", "--dtype", dtype, "--seed", "3", "--set",
                                          "vocab_size=300", "--tokenizer", "")
    f32 = refmodel.read_safetensors(os.path.join(dirs["f32"], "model.safetensors"))
    bf16 = refmodel.read_safetensors(os.path.join(dirs["bf16"], "model.safetensors"))
    bad = [k for k in f32 if not torch.equal(f32[k].to(torch.bfloat16).to(torch.float32), bf16[k])]
    tap.ok(sorted(f32) == sorted(bf16) and not bad,
           "make_model: the bf16 model is the f32 model of the same seed rounded to nearest even "
           "(%d tensors, mismatched: %s)" % (len(f32), bad or "none"))


def main():
    tap = refmodel.Tap()
    tmp = refmodel.scratch(tap, "engine-reference")
    if not os.access(refmodel.binary(), os.X_OK):
        tap.ok(False, "binary %s exists (build it first)" % refmodel.binary())
        tap.done()
    for index, case in enumerate(CASES):
        run_case(tap, tmp, index, case)
    check_shards(tap, tmp)
    check_eos(tap, tmp)
    check_model_writer(tap, tmp)
    tap.done()


if __name__ == "__main__":
    main()
