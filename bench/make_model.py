#!/usr/bin/python3
"""make_model.py — write a deterministic random-weight model directory in the Hugging Face layout.

    /usr/bin/python3 bench/make_model.py --out DIR
        [--preset qwen3-0.6b|tiny-qwen3|tiny-llama|tiny-qwen2] [--config FILE.json]
        [--dtype bf16|f32|f16] [--seed N] [--set key=value ...] [--tokenizer DIR] [--shards N]

The directory holds config.json, generation_config.json, model.safetensors (or, with --shards N,
up to N shards and model.safetensors.index.json) and the tokenizer files copied from --tokenizer
(default: the repository's models/qwen3-tokenizer). It is every issue's
benchmark model (--preset qwen3-0.6b has Qwen3-0.6B's exact shapes: 596,049,920 parameters) and
the engine tests' test model (the tiny presets, varied with --set).

Why the weights look the way they do: a random model is only a useful test if its activations
stay in a sane range and its logits have real spread (a near-tie at every step would make greedy
decoding meaningless to compare). So every projection W[out, in] is N(0, 1/sqrt(in)) (unit
variance in, unit variance out), norm weights are 1 + N(0, 0.1), biases N(0, 0.1), and the
embedding / LM head rows are N(0, 1.5/sqrt(hidden)) so that logits have a standard deviation of
about 1.5: more spread would scale up the BF16 rounding error of every logit too (with BF16
activations and KV, as the AVX-512 kernels compute, the error reaches ~0.05 at this scale, under
the tests' 0.1).

Determinism: each tensor's values come from its own random stream, seeded by (--seed, tensor
name), drawn in F32 and then rounded to the stored dtype. So the bf16 and f32 models of one seed
are the same model up to rounding, and changing one shape leaves the other tensors unchanged.

The file is written streaming (numpy, a few million values at a time), never as one big tensor:
the 1.2 GB BF16 file of the qwen3-0.6b preset takes well under a minute.
"""

import argparse
import json
import os
import shutil
import struct
import sys
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TOKENIZER = os.path.join(ROOT, "models", "qwen3-tokenizer")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
CHUNK = 1 << 22  # values generated per numpy call: bounds memory for any tensor size

# Qwen3-0.6B's config.json, as Hugging Face ships it (models/qwen3-tokenizer/config.json).
QWEN3_06B = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


def _tiny(model_type, arch, **kw):
    """A tiny model with the real Qwen3 vocabulary, so the Qwen3 tokenizer's ids are all valid."""
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_act": "silu",
        "attention_bias": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vocab_size": 151936,
        "hidden_size": 64,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    }
    cfg.update(kw)
    return cfg


PRESETS = {
    "qwen3-0.6b": QWEN3_06B,
    # head_dim 32 with 4 heads: hidden (64) != heads * head_dim (128), as in the real Qwen3-0.6B.
    "tiny-qwen3": _tiny("qwen3", "Qwen3ForCausalLM", head_dim=32),
    "tiny-llama": _tiny(
        "llama",
        "LlamaForCausalLM",
        rms_norm_eps=1e-05,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        intermediate_size=172,
    ),
    "tiny-qwen2": _tiny("qwen2", "Qwen2ForCausalLM"),
}

# --dtype -> (safetensors dtype, bytes per value)
DTYPES = {"f32": ("F32", 4), "bf16": ("BF16", 2), "f16": ("F16", 2)}


def parse_value(text):
    """--set values are JSON when they parse as JSON (numbers, true, null, lists), else strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def has_qkv_bias(cfg):
    return cfg["model_type"] == "qwen2" or bool(cfg.get("attention_bias"))


def tensor_specs(cfg):
    """(name, shape, kind) of every tensor, in the Hugging Face naming; kind picks the init."""
    h, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], head_dim(cfg)
    nq, nkv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    specs = [("model.embed_tokens.weight", (cfg["vocab_size"], h), "embed")]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        specs += [
            (p + "input_layernorm.weight", (h,), "norm"),
            (p + "post_attention_layernorm.weight", (h,), "norm"),
            (p + "self_attn.q_proj.weight", (nq, h), "matrix"),
            (p + "self_attn.k_proj.weight", (nkv, h), "matrix"),
            (p + "self_attn.v_proj.weight", (nkv, h), "matrix"),
            (p + "self_attn.o_proj.weight", (h, nq), "matrix"),
            (p + "mlp.gate_proj.weight", (inter, h), "matrix"),
            (p + "mlp.up_proj.weight", (inter, h), "matrix"),
            (p + "mlp.down_proj.weight", (h, inter), "matrix"),
        ]
        if has_qkv_bias(cfg):
            specs += [
                (p + "self_attn.q_proj.bias", (nq,), "bias"),
                (p + "self_attn.k_proj.bias", (nkv,), "bias"),
                (p + "self_attn.v_proj.bias", (nkv,), "bias"),
            ]
        if cfg["model_type"] == "qwen3":
            specs += [
                (p + "self_attn.q_norm.weight", (hd,), "norm"),
                (p + "self_attn.k_norm.weight", (hd,), "norm"),
            ]
    specs.append(("model.norm.weight", (h,), "norm"))
    if not cfg.get("tie_word_embeddings", False):
        specs.append(("lm_head.weight", (cfg["vocab_size"], h), "embed"))
    return sorted(specs)


def init_std(kind, shape, cfg):
    """(mean, std) of a tensor's values; see the module comment for why."""
    if kind == "norm":
        return 1.0, 0.1
    if kind == "bias":
        return 0.0, 0.1
    if kind == "embed":
        return 0.0, 1.5 / np.sqrt(cfg["hidden_size"])
    return 0.0, 1.0 / np.sqrt(shape[1])


def to_storage(x, dtype):
    """F32 values -> the stored little-endian representation (BF16: round to nearest even)."""
    if dtype == "f32":
        return x.astype("<f4", copy=False)
    if dtype == "f16":
        return x.astype("<f2")
    u = x.astype(np.float32, copy=False).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype("<u2")


def tensor_chunks(name, shape, kind, cfg, seed):
    """Yield a tensor's F32 values in row-major order, CHUNK at a time, from its own stream."""
    mean, std = init_std(kind, shape, cfg)
    stream = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
    rng = np.random.Generator(np.random.PCG64(stream))
    total = int(np.prod(shape))
    done = 0
    while done < total:
        n = min(CHUNK, total - done)
        x = rng.standard_normal(n, dtype=np.float32)
        x *= np.float32(std)
        x += np.float32(mean)
        yield x
        done += n


def write_safetensors(path, specs, cfg, dtype, seed):
    """Write the tensors `specs` of cfg to path, streaming; returns their total byte size."""
    st_dtype, size = DTYPES[dtype]
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in specs:
        nbytes = int(np.prod(shape)) * size
        header[name] = {"dtype": st_dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as Hugging Face writes it
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, kind in specs:
            for x in tensor_chunks(name, shape, kind, cfg, seed):
                f.write(to_storage(x, dtype).tobytes())
    os.replace(tmp, path)
    return offset


def split_shards(specs, n, size):
    """specs cut, in order, into at most n runs of roughly equal bytes (a huge tensor may leave
    fewer: empty runs are dropped)."""
    total = max(1, sum(int(np.prod(s)) * size for _, s, _ in specs))
    shards, done = [[] for _ in range(n)], 0
    for spec in specs:
        shards[min(n - 1, done * n // total)].append(spec)
        done += int(np.prod(spec[1])) * size
    return [s for s in shards if s]


def write_weights(out, cfg, dtype, seed, n_shards):
    """model.safetensors, or with n_shards > 1 Hugging Face's model-0000i-of-0000N.safetensors
    plus model.safetensors.index.json. Returns the parameter count."""
    specs = tensor_specs(cfg)
    index = os.path.join(out, "model.safetensors.index.json")
    single = os.path.join(out, "model.safetensors")
    for stale in (index, single):
        if os.path.exists(stale):
            os.remove(stale)
    if n_shards <= 1:
        write_safetensors(single, specs, cfg, dtype, seed)
    else:
        shards = split_shards(specs, n_shards, DTYPES[dtype][1])
        weight_map, total = {}, 0
        for i, part in enumerate(shards):
            name = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
            total += write_safetensors(os.path.join(out, name), part, cfg, dtype, seed)
            weight_map.update({t: name for t, _, _ in part})
        with open(index, "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return sum(int(np.prod(s)) for _, s, _ in specs)


def generation_config(cfg, tokenizer_dir):
    """The tokenizer's generation_config.json (sampling defaults) if it has one, with BOS/EOS
    from config.json and every special id outside the vocabulary dropped."""
    gen = {}
    src = os.path.join(tokenizer_dir, "generation_config.json") if tokenizer_dir else None
    if src and os.path.exists(src):
        with open(src) as f:
            gen = json.load(f)
    vocab = cfg["vocab_size"]
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    eos = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None and e < vocab]
    gen["eos_token_id"] = eos
    for key in ("bos_token_id", "pad_token_id"):
        value = gen.get(key, cfg.get(key))
        if value is None or value >= vocab:
            gen.pop(key, None)
        else:
            gen[key] = value
    return gen


def build_config(args):
    # no preset and no --config: the tiny Qwen3 model (--set alone edits it)
    base = args.preset or (None if args.config else "tiny-qwen3")
    cfg = dict(PRESETS[base]) if base else {}
    if args.config:
        with open(args.config) as f:
            cfg.update(json.load(f))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit("make_model.py: --set wants key=value, got %r" % item)
        cfg[key] = parse_value(value)
    missing = [k for k in ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                           "num_hidden_layers", "num_attention_heads") if k not in cfg]
    if missing:
        sys.exit("make_model.py: config lacks %s" % ", ".join(missing))
    if cfg["model_type"] not in ("qwen3", "qwen2", "llama"):
        sys.exit("make_model.py: model_type %r is not qwen3, qwen2 or llama" % cfg["model_type"])
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        sys.exit("make_model.py: num_attention_heads must be a multiple of num_key_value_heads")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        # a small --set vocab_size keeps the tokenizer but drops its special ids: ids a model
        # cannot produce would only make its config invalid
        ids = cfg.get(key)
        if isinstance(ids, list):
            cfg[key] = [i for i in ids if i < cfg["vocab_size"]] or None
        elif ids is not None and ids >= cfg["vocab_size"]:
            cfg[key] = None
    cfg["head_dim"] = head_dim(cfg)
    cfg["torch_dtype"] = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[args.dtype]
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory to write (created)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="base config (default tiny-qwen3)")
    ap.add_argument("--config", help="a config.json whose keys override the preset's")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config key (value parsed as JSON when possible)")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                    help="directory whose tokenizer files are copied ('' for none)")
    ap.add_argument("--shards", type=int, default=1,
                    help="split the weights into this many files + model.safetensors.index.json")
    args = ap.parse_args(argv)

    cfg = build_config(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(generation_config(cfg, args.tokenizer), f, indent=2)
    if args.tokenizer:
        for name in TOKENIZER_FILES:
            src = os.path.join(args.tokenizer, name)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(args.out, name))
    n = write_weights(args.out, cfg, args.dtype, args.seed, args.shards)
    print("%s: %s %s, %d parameters" % (args.out, cfg["model_type"], args.dtype, n))


if __name__ == "__main__":
    main()
