#!/usr/bin/python3
"""make_lora.py — write a deterministic random LoRA adapter for a model directory, in PEFT's
file layout: adapter_config.json and adapter_model.safetensors with tensors

    base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_A.weight   [r, in]
    base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_B.weight   [out, r]
    base_model.model.model.layers.{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight

Unlike PEFT's initialisation (B = 0, a no-op until trained) both A and B are random, so the
adapter changes the model's output and tests can see whether it was applied. Used by the LoRA
tests (tests/test_engine_lora.py, tests/test_server_lora.py) and bench/run.sh.

    make_lora.py --model DIR --out DIR [--r 16] [--alpha 32] [--targets q_proj,v_proj]
                 [--rslora] [--dtype f32|bf16|f16] [--seed N] [--set KEY=JSON]
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
          "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
DTYPES = {"f32": ("F32", np.float32), "f16": ("F16", np.float16), "bf16": ("BF16", None)}


def module_dims(cfg):
    """module -> (in features, out features) of a config.json."""
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    nh = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or h // nh
    nkv = cfg.get("num_key_value_heads", nh)
    qd, kvd = nh * hd, nkv * hd
    return {"q_proj": (h, qd), "k_proj": (h, kvd), "v_proj": (h, kvd), "o_proj": (qd, h),
            "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}


def tensor_name(layer, module, which):
    return "base_model.model.model.layers.%d.%s.%s.lora_%s.weight" % (
        layer, PARENT[module], module, which)


def bf16_bits(x):
    """float32 -> BF16 bit patterns, round to nearest even (as torch rounds)."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def to_bytes(x, dtype):
    if dtype == "bf16":
        return bf16_bits(x).tobytes()
    return x.astype("<f2" if dtype == "f16" else "<f4").tobytes()


def stored(x, dtype):
    """The float32 values a reader widens from what to_bytes wrote."""
    if dtype == "bf16":
        return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float16).astype(np.float32) if dtype == "f16" else x


def write_safetensors(path, tensors, dtype):
    """tensors: list of (name, float32 array), written in that order."""
    st = DTYPES[dtype][0]
    size = 4 if dtype == "f32" else 2
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, x in tensors:
        n = int(x.size) * size
        header[name] = {"dtype": st, "shape": list(x.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, x in tensors:
            f.write(to_bytes(x, dtype))


def make(model_dir, out, r=16, alpha=32.0, targets=MODULES, rslora=False, dtype="f32", seed=0,
         extra=None, std_b=0.05):
    """Write the adapter; returns ({tensor name: float32 array} holding the values as stored,
    i.e. after any BF16/F16 rounding, and the config written)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    dims = module_dims(cfg)
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    tensors = []
    for layer in range(cfg["num_hidden_layers"]):
        for m in targets:
            fan_in, fan_out = dims[m]
            a = rng.uniform(-1, 1, (r, fan_in)).astype(np.float32) / np.sqrt(fan_in)
            b = (rng.standard_normal((fan_out, r)) * std_b).astype(np.float32)
            tensors += [(tensor_name(layer, m, "A"), a), (tensor_name(layer, m, "B"), b)]
    write_safetensors(os.path.join(out, "adapter_model.safetensors"), tensors, dtype)
    weights = {name: stored(x, dtype) for name, x in tensors}
    conf = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": model_dir,
            "r": r, "lora_alpha": alpha, "lora_dropout": 0.05, "target_modules": list(targets),
            "bias": "none", "use_rslora": rslora, "use_dora": False, "fan_in_fan_out": False,
            "layers_to_transform": None, "modules_to_save": None, "rank_pattern": {},
            "alpha_pattern": {}, "inference_mode": True}
    conf.update(extra or {})
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    return weights, conf


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the base model directory (config.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--targets", default=",".join(MODULES))
    ap.add_argument("--rslora", action="store_true")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override one adapter_config.json key")
    a = ap.parse_args(argv)
    extra = {}
    for kv in a.set:
        k, v = kv.split("=", 1)
        extra[k] = json.loads(v)
    make(a.model, a.out, a.r, a.alpha, a.targets.split(","), a.rslora, a.dtype, a.seed, extra)
    print(a.out)


if __name__ == "__main__":
    sys.exit(main())
