#!/usr/bin/python3
"""gguf_write.py — write a Hugging Face model directory as a GGUF file, the way llama.cpp's
convert_hf_to_gguf.py lays it out, for the tests (written from the GGUF spec; no gguf-py needed).

    /usr/bin/python3 tests/gguf_write.py DIR OUT.gguf [--dtype f32|f16|bf16] [--pre NAME]
        [--alignment N] [--version 2|3] [--no-tokenizer | --no-weights]

DIR holds config.json, model.safetensors (F32/F16/BF16), tokenizer.json and
tokenizer_config.json; a SentencePiece-style (Llama) tokenizer also needs its tokenizer.model (or
the one *.model file in DIR) for the piece scores and types GGUF carries.

What llama.cpp does and this writer repeats: metadata keys under the architecture's name
(qwen3., qwen2., llama.); tensor names token_embd / blk.N.attn_q ... / output_norm / output
(absent when tied); 1-D tensors (norms, biases) kept in F32, matrices at --dtype; dims written
innermost first; and, for the llama architecture only, the rows of each head of the Q and K
projections permuted from Hugging Face's rotate-half order to ggml's interleaved RoPE order.
Vocabulary: every id up to vocab_size (unused ids as "[PADn]" of type UNUSED), added tokens as
CONTROL (special) or USER_DEFINED; gpt2 models carry merges, llama models scores.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

ALIGN = 32
# GGUF metadata value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# ggml tensor types and GGUF token types
GGML = {"f32": 0, "f16": 1, "bf16": 30}
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32}
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


# ---------------------------------------------------------------- encoding

def gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def scalar(t, v):
    fmt = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?",
           U64: "Q", I64: "q", F64: "d"}[t]
    return struct.pack("<" + fmt, v)


def value(t, v, elem=None):
    if t == STRING:
        return gstr(v)
    if t == ARRAY:
        out = [struct.pack("<IQ", elem, len(v))]
        if elem == STRING:
            out += [gstr(x) for x in v]
        elif elem in (I32, F32):
            out.append(np.asarray(v, dtype="<i4" if elem == I32 else "<f4").tobytes())
        else:
            out += [scalar(elem, x) for x in v]
        return b"".join(out)
    return scalar(t, v)


class Writer:
    def __init__(self):
        self.kv = []       # (key, type, value, elem)
        self.tensors = []  # (name, dims innermost first, ggml type, bytes)

    def add(self, key, t, v, elem=None):
        self.kv.append((key, t, v, elem))

    def tensor(self, name, arr, dtype):
        """arr: float32 numpy array, outermost dim first; stored as dtype."""
        if dtype == "f32":
            data = arr.astype("<f4").tobytes()
        elif dtype == "f16":
            data = arr.astype("<f2").tobytes()
        else:  # bf16, round to nearest even
            u = arr.astype("<f4").view("<u4").astype(np.uint64)
            u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
            data = u.tobytes()
        self.tensors.append((name, list(reversed(arr.shape)), GGML[dtype], data))

    def write(self, path, version=3, alignment=ALIGN):
        if alignment != ALIGN:
            self.add("general.alignment", U32, alignment)
        out = [b"GGUF", struct.pack("<IQQ", version, len(self.tensors), len(self.kv))]
        for key, t, v, elem in self.kv:
            out += [gstr(key), struct.pack("<I", t), value(t, v, elem)]
        offset = 0
        for name, dims, ty, data in self.tensors:
            out += [gstr(name), struct.pack("<I", len(dims)),
                    b"".join(struct.pack("<Q", d) for d in dims), struct.pack("<IQ", ty, offset)]
            offset += (len(data) + alignment - 1) // alignment * alignment
        head = b"".join(out)
        head += b"\0" * (-len(head) % alignment)
        with open(path, "wb") as f:
            f.write(head)
            for _, _, _, data in self.tensors:
                f.write(data)
                f.write(b"\0" * (-len(data) % alignment))


# ---------------------------------------------------------------- reading the HF directory

def read_safetensors(path):
    """name -> float32 numpy array (F32, F16, BF16)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            dt = info["dtype"]
            if dt == "F32":
                a = np.frombuffer(raw, "<f4")
            elif dt == "F16":
                a = np.frombuffer(raw, "<f2").astype(np.float32)
            elif dt == "BF16":
                a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                sys.exit(f"{path}: tensor {name}: dtype {dt} not supported")
            out[name] = a.reshape(info["shape"]).astype(np.float32)
    return out


def read_sentencepiece(path):
    """(pieces [(piece, score, type)], add_dummy_prefix) from a SentencePiece ModelProto."""
    data = open(path, "rb").read()

    def varint(b, i):
        v = s = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return v, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            num, wt = key >> 3, key & 7
            if wt == 0:
                v, i = varint(b, i)
            elif wt == 1:
                v, i = b[i:i + 8], i + 8
            elif wt == 2:
                n, i = varint(b, i)
                v, i = b[i:i + n], i + n
            elif wt == 5:
                v, i = b[i:i + 4], i + 4
            else:
                sys.exit(f"{path}: unsupported protobuf wire type {wt}")
            yield num, v

    pieces, dummy = [], True
    for num, v in fields(data):
        if num == 1:
            p = {1: b"", 2: struct.pack("<f", 0.0), 3: NORMAL}
            p.update(dict(fields(v)))
            pieces.append((p[1].decode("utf-8"), struct.unpack("<f", p[2])[0], p[3]))
        elif num == 3:  # normalizer_spec: add_dummy_prefix is field 3
            dummy = bool(dict(fields(v)).get(3, 1))
    return pieces, dummy


# ---------------------------------------------------------------- model and tokenizer

ARCH = {"qwen3": "qwen3", "qwen2": "qwen2", "llama": "llama"}
LAYER = [("input_layernorm.weight", "attn_norm.weight"),
         ("post_attention_layernorm.weight", "ffn_norm.weight"),
         ("self_attn.q_proj.weight", "attn_q.weight"), ("self_attn.k_proj.weight", "attn_k.weight"),
         ("self_attn.v_proj.weight", "attn_v.weight"),
         ("self_attn.o_proj.weight", "attn_output.weight"),
         ("self_attn.q_norm.weight", "attn_q_norm.weight"),
         ("self_attn.k_norm.weight", "attn_k_norm.weight"),
         ("self_attn.q_proj.bias", "attn_q.bias"), ("self_attn.k_proj.bias", "attn_k.bias"),
         ("self_attn.v_proj.bias", "attn_v.bias"),
         ("mlp.gate_proj.weight", "ffn_gate.weight"), ("mlp.up_proj.weight", "ffn_up.weight"),
         ("mlp.down_proj.weight", "ffn_down.weight")]


def permute(w, n_head):
    """Hugging Face rotate-half rows -> llama.cpp's interleaved order, per head."""
    d = w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_model(w, cfg, weights, dtype):
    arch = ARCH[cfg["model_type"]]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim", cfg["hidden_size"] // nh)
    w.add("general.architecture", STRING, arch)
    w.add("general.name", STRING, "radixserve-test")
    w.add("general.file_type", U32, FILE_TYPE[dtype])
    w.add(f"{arch}.context_length", U32, cfg.get("max_position_embeddings", 32768))
    w.add(f"{arch}.embedding_length", U32, cfg["hidden_size"])
    w.add(f"{arch}.block_count", U32, cfg["num_hidden_layers"])
    w.add(f"{arch}.feed_forward_length", U32, cfg["intermediate_size"])
    w.add(f"{arch}.attention.head_count", U32, nh)
    w.add(f"{arch}.attention.head_count_kv", U32, nkv)
    w.add(f"{arch}.rope.freq_base", F32, float(cfg.get("rope_theta", 10000.0)))
    w.add(f"{arch}.attention.layer_norm_rms_epsilon", F32, float(cfg.get("rms_norm_eps", 1e-6)))
    w.add(f"{arch}.attention.key_length", U32, hd)
    w.add(f"{arch}.attention.value_length", U32, hd)
    if arch == "llama":
        w.add(f"{arch}.vocab_size", U32, cfg["vocab_size"])
        w.add(f"{arch}.rope.dimension_count", U32, hd)

    def put(name, a):
        w.tensor(name, a, "f32" if a.ndim == 1 else dtype)

    put("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in LAYER:
            a = weights.get(f"model.layers.{i}.{hf}")
            if a is None:
                continue
            if arch == "llama" and gg == "attn_q.weight":
                a = permute(a, nh)
            if arch == "llama" and gg == "attn_k.weight":
                a = permute(a, nkv)
            put(f"blk.{i}.{gg}", a)
    put("output_norm.weight", weights["model.norm.weight"])
    if not cfg.get("tie_word_embeddings", False):
        put("output.weight", weights["lm_head.weight"])


def token_of(cfg_value):
    return cfg_value.get("content") if isinstance(cfg_value, dict) else cfg_value


def write_tokenizer(w, d, cfg, pre):
    tok = json.load(open(os.path.join(d, "tokenizer.json")))
    tcfg_path = os.path.join(d, "tokenizer_config.json")
    tcfg = json.load(open(tcfg_path)) if os.path.exists(tcfg_path) else {}
    vocab = tok["model"]["vocab"]
    added = {t["id"]: t for t in tok.get("added_tokens", [])}
    ids = {s: i for s, i in vocab.items()}
    ids.update({t["content"]: i for i, t in added.items()})
    n = max(cfg["vocab_size"], max(ids.values()) + 1)
    rev = {i: s for s, i in ids.items()}
    spm = tok["model"].get("byte_fallback") and not json.dumps(tok.get("pre_tokenizer")).count("ByteLevel")
    tokens, types, scores = [], [], []
    if spm:
        models = [f for f in os.listdir(d) if f.endswith(".model")]
        path = os.path.join(d, "tokenizer.model" if "tokenizer.model" in models else models[0])
        pieces, dummy = read_sentencepiece(path)
        for piece, score, ty in pieces:
            tokens.append(piece)
            scores.append(score)
            types.append(ty)
        w.add("tokenizer.ggml.model", STRING, "llama")
        w.add("tokenizer.ggml.pre", STRING, pre or "default")
        w.add("tokenizer.ggml.add_space_prefix", BOOL, dummy)
    else:
        for i in range(n):
            if i not in rev:
                tokens.append(f"[PAD{i}]")
                types.append(UNUSED)
            elif i in added:
                tokens.append(rev[i])
                types.append(CONTROL if added[i].get("special") else USER_DEFINED)
            else:
                tokens.append(rev[i])
                types.append(NORMAL)
        w.add("tokenizer.ggml.model", STRING, "gpt2")
        w.add("tokenizer.ggml.pre", STRING, pre or "qwen2")
    w.add("tokenizer.ggml.tokens", ARRAY, tokens, STRING)
    if spm:
        w.add("tokenizer.ggml.scores", ARRAY, scores, F32)
    w.add("tokenizer.ggml.token_type", ARRAY, types, I32)
    if not spm:
        merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
        w.add("tokenizer.ggml.merges", ARRAY, merges, STRING)
    # special ids: as llama.cpp's SpecialVocab, from tokenizer_config.json, then config.json
    for key, name, cfg_id in (("bos", "bos_token", "bos_token_id"), ("eos", "eos_token", "eos_token_id"),
                              ("unknown", "unk_token", None), ("padding", "pad_token", None)):
        t = token_of(tcfg.get(name))
        i = ids.get(t) if t is not None else cfg.get(cfg_id) if cfg_id else None
        i = i if i is None or isinstance(i, int) or isinstance(i, list) else None
        if isinstance(i, list):
            i = i[0]
        if i is not None:
            w.add(f"tokenizer.ggml.{key}_token_id", U32, i)
    if "add_bos_token" in tcfg:
        w.add("tokenizer.ggml.add_bos_token", BOOL, bool(tcfg["add_bos_token"]))
    if "add_eos_token" in tcfg:
        w.add("tokenizer.ggml.add_eos_token", BOOL, bool(tcfg["add_eos_token"]))
    tpl = tcfg.get("chat_template")
    jinja = os.path.join(d, "chat_template.jinja")
    if os.path.exists(jinja):
        tpl = open(jinja).read()
    if isinstance(tpl, str):
        w.add("tokenizer.chat_template", STRING, tpl)


def build(d, dtype="f32", tokenizer=True, weights=True, pre=None):
    """The Writer for directory d, not yet written (tests edit it first)."""
    w = Writer()
    if weights:
        cfg = json.load(open(os.path.join(d, "config.json")))
        write_model(w, cfg, read_safetensors(os.path.join(d, "model.safetensors")), dtype)
    else:
        cfg = {"vocab_size": 0}
        w.add("general.architecture", STRING, "qwen3")
    if tokenizer:
        write_tokenizer(w, d, cfg, pre)
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=sorted(GGML), default="f32")
    ap.add_argument("--pre", help="tokenizer.ggml.pre (default: qwen2 for gpt2, default for llama)")
    ap.add_argument("--alignment", type=int, default=ALIGN)
    ap.add_argument("--version", type=int, default=3)
    ap.add_argument("--no-tokenizer", action="store_true")
    ap.add_argument("--no-weights", action="store_true",
                    help="metadata of the tokenizer only (no config.json or weights needed)")
    ap.add_argument("--file-type", type=int,
                    help="general.file_type to write instead of the dtype's (llama_ftype: 15 is "
                    "what llama-quantize writes for Q4_K_M)")
    a = ap.parse_args()
    w = build(a.dir, a.dtype, not a.no_tokenizer, not a.no_weights, a.pre)
    if a.file_type is not None:
        w.kv = [(k, t, a.file_type if k == "general.file_type" else v, e) for k, t, v, e in w.kv]
    w.write(a.out, a.version, a.alignment)


if __name__ == "__main__":
    main()
