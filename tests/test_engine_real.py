#!/usr/bin/python3
"""test_engine_real.py — the real Qwen3-0.6B, when a copy is at hand.

Real weights cannot be downloaded on these machines; if the environment variable
RADIXSERVE_REAL_MODEL names a complete Qwen3-0.6B directory (config.json, model.safetensors or
an index with its shards), check:
  - 596,049,920 parameters, counted from the safetensors headers;
  - greedy continuation of `明月几时有，把酒问` (ids below) by the binary decodes (Qwen's byte-level
    BPE, our own decoder over vocab.json) to text starting `青天。对酒当歌，人生几`;
  - the ids agree with the PyTorch reference's greedy decoding until a near-tie.
Otherwise it reports one skip saying why.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodel  # noqa: E402

PROMPT = [30858, 9754, 99195, 13343, 18830, 3837, 99360, 99525, 56007]  # 明月几时有，把酒问
WANT = "青天。对酒当歌，人生几"
N_PARAMS = 596049920
N_STEPS = 16  # the wanted text is 10 tokens on its own


def missing_parts(model_dir):
    """What a directory lacks to be a runnable model (empty list: complete)."""
    if not os.path.isdir(model_dir):
        return ["the directory itself"]
    lack = [] if os.path.exists(os.path.join(model_dir, "config.json")) else ["config.json"]
    try:
        files = refmodel.model_files(model_dir)
        lack += [os.path.basename(f) for f in files if not os.path.exists(f)]
    except (OSError, ValueError, KeyError) as err:
        lack.append("a readable model.safetensors.index.json (%s)" % err)
    return lack


def vocab_dir(model_dir):
    """Where vocab.json is: the model's own, else the repository's copy of Qwen3's tokenizer."""
    if os.path.exists(os.path.join(model_dir, "vocab.json")):
        return model_dir
    return os.path.join(refmodel.repo_root(), "models", "qwen3-tokenizer")


def main():
    tap = refmodel.Tap()
    model_dir = os.environ.get("RADIXSERVE_REAL_MODEL", "")
    if not model_dir:
        tap.skip("RADIXSERVE_REAL_MODEL not set (point it at a Qwen3-0.6B directory as Hugging "
                 "Face ships it; see docs/arch-testing.md)")
        tap.done()
    lack = missing_parts(model_dir)
    if lack:
        tap.skip("RADIXSERVE_REAL_MODEL=%s is incomplete: missing %s"
                 % (model_dir, ", ".join(lack)))
        tap.done()

    n = refmodel.count_parameters(model_dir)
    tap.ok(n == N_PARAMS, "%s has %s parameters (want %s)"
           % (model_dir, format(n, ","), format(N_PARAMS, ",")))
    logits_path = os.path.join(refmodel.scratch(tap, "engine-real"), "logits")
    gen = refmodel.generate(model_dir, PROMPT, N_STEPS, timeout=600, logits_path=logits_path)
    if not tap.ok(gen.rc == 0 and len(gen.ids) > 0,
                  "generate runs (rc %d, %d ids)" % (gen.rc, len(gen.ids))):
        tap.diag(gen.stderr[-1500:])
        tap.done()
    decoder = refmodel.ByteBPEDecoder(vocab_dir(model_dir))
    text = decoder.decode(gen.ids)
    tap.ok(text.startswith(WANT),
           "greedy continuation of 明月几时有，把酒问 starts %s: %r" % (WANT, text))
    ref = refmodel.load_hf(model_dir)
    ref_ids, _, gaps = ref.greedy(PROMPT, len(gen.ids), eos=refmodel.eos_ids(model_dir))
    refmodel.check_ids(tap, "Qwen3-0.6B", gen.ids, ref_ids, gaps, exact=False)
    tap.done()


if __name__ == "__main__":
    main()
