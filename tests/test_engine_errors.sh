#!/usr/bin/env bash
# test_engine_errors.sh — broken model directories give one clear error, never a crash.
#
# From one good tiny random model (bench/make_model.py) it writes broken copies — truncated,
# empty and corrupt safetensors, header offsets past the end, a missing tensor, a wrong shape,
# an unsupported dtype, a missing shard, bad or incomplete config.json, an unknown model_type, a
# missing directory; and broken GGUF files written from the same model (tests/gguf_write.py):
# truncated header and data, bad version, impossible counts and string lengths, an unknown value
# type, a bad alignment, an unsupported tensor type, a missing tensor or key, a wrong shape, an
# unknown architecture — and runs `$BIN generate` on each. Every run must exit non-zero by itself
# (status 1..127: not killed by a signal, not a sanitizer abort), print exactly one line on
# stderr, and that line must name the file (and the tensor or key, where there is one).
set -u
ROOT=${RADIXSERVE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT" || exit 1
BIN=${BIN:-bin/radixserve}
# per process: parallel runs (release and asan) must not overwrite each other's files
TMP=${RADIXSERVE_TMP:-$ROOT/build/test-tmp}/engine-errors.$$
PY=/usr/bin/python3
n=0 failed=0

ok() { # ok COND-STATUS MESSAGE
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}

if [ ! -x "$BIN" ]; then
    ok 1 "binary $BIN exists (build it first)"
    echo "1..$n"
    exit 1
fi

mkdir -p "$TMP"
good=$TMP/good
if ! $PY bench/make_model.py --out "$good" --preset tiny-qwen3 --dtype f32 --seed 5 \
    --set vocab_size=512 --tokenizer '' >/dev/null; then
    ok 1 "bench/make_model.py writes the good model"
    echo "1..$n"
    exit 1
fi

# corrupt GOOD DST KIND: DST = a copy of GOOD broken in one way.
corrupt() {
    $PY - "$@" <<'PYEOF'
import json, os, shutil, struct, sys

src, dst, kind = sys.argv[1:4]
shutil.copytree(src, dst)
st = os.path.join(dst, "model.safetensors")
raw = open(st, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
cfg_path = os.path.join(dst, "config.json")
cfg = json.load(open(cfg_path))


def write_header(h):
    blob = json.dumps(h).encode()
    open(st, "wb").write(struct.pack("<Q", len(blob)) + blob + data)


if kind == "truncated":
    open(st, "wb").write(raw[: len(raw) // 2])
elif kind == "empty":
    open(st, "wb").close()
elif kind == "bad-header-json":
    open(st, "wb").write(raw[:8] + b'{"x": [' + raw[15:])
elif kind == "header-length":
    open(st, "wb").write(struct.pack("<Q", len(raw) * 4) + raw[8:])
elif kind == "offsets-past-end":
    header["model.norm.weight"]["data_offsets"] = [len(data) - 16, len(data) + 240]
    write_header(header)
elif kind == "missing-tensor":
    del header["model.layers.1.mlp.up_proj.weight"]
    write_header(header)
elif kind == "wrong-shape":  # same byte size, transposed: only the shape check can catch it
    t = header["model.layers.0.self_attn.q_proj.weight"]
    t["shape"] = t["shape"][::-1]
    write_header(header)
elif kind == "bad-dtype":
    header["model.norm.weight"]["dtype"] = "I64"
    write_header(header)
elif kind == "missing-shard":
    header.pop("__metadata__", None)
    shard = "model-00001-of-00002.safetensors"
    wmap = {name: shard for name in header}
    wmap["model.norm.weight"] = "model-00002-of-00002.safetensors"
    json.dump({"metadata": {}, "weight_map": wmap},
              open(os.path.join(dst, "model.safetensors.index.json"), "w"))
    os.rename(st, os.path.join(dst, shard))
elif kind == "bad-config":
    open(cfg_path, "w").write('{"model_type": "qwen3", "hidden_size": ')
elif kind == "unknown-arch":
    cfg["model_type"] = "gpt2"
    json.dump(cfg, open(cfg_path, "w"))
elif kind == "config-missing-key":
    del cfg["hidden_size"]
    json.dump(cfg, open(cfg_path, "w"))
else:
    sys.exit("unknown corruption " + kind)
PYEOF
}

# expect KIND DIR WORD...: generate on DIR fails cleanly with one stderr line holding every WORD.
expect() {
    local kind=$1 dir=$2
    shift 2
    local err=$TMP/$kind.err rc
    timeout 60 "$BIN" generate --model "$dir" --prompt-ids 1,2,3 -n 2 --temperature 0 \
        >/dev/null 2>"$err"
    rc=$?
    [ "$rc" -ge 1 ] && [ "$rc" -lt 124 ]
    ok $? "$kind: generate exits with an error status, not a signal or timeout (status $rc)"
    [ "$(grep -c . "$err")" -eq 1 ]
    ok $? "$kind: exactly one line on stderr ($(grep -c . "$err") lines)"
    local word missing=""
    for word in "$@"; do grep -qF -- "$word" "$err" || missing="$missing '$word'"; done
    [ -z "$missing" ]
    ok $? "$kind: the message names$(printf " '%s'" "$@")${missing:+ (missing:$missing)}: $(head -c 300 "$err")"
}

# The good model itself must work, or every check below proves nothing.
timeout 60 "$BIN" generate --model "$good" --prompt-ids 1,2,3 -n 2 --temperature 0 >/dev/null 2>&1
ok $? "the unbroken model generates (exit 0)"

for kind in truncated empty bad-header-json header-length offsets-past-end missing-tensor \
    wrong-shape bad-dtype missing-shard bad-config unknown-arch config-missing-key; do
    if ! corrupt "$good" "$TMP/$kind" "$kind"; then
        ok 1 "$kind: writing the broken copy"
    fi
done

expect truncated "$TMP/truncated" model.safetensors
expect empty "$TMP/empty" model.safetensors
expect bad-header-json "$TMP/bad-header-json" model.safetensors header
expect header-length "$TMP/header-length" model.safetensors header
expect offsets-past-end "$TMP/offsets-past-end" model.safetensors model.norm.weight
expect missing-tensor "$TMP/missing-tensor" model.safetensors model.layers.1.mlp.up_proj.weight
expect wrong-shape "$TMP/wrong-shape" model.safetensors model.layers.0.self_attn.q_proj.weight \
    "[128, 64]"
expect bad-dtype "$TMP/bad-dtype" model.safetensors model.norm.weight I64
expect missing-shard "$TMP/missing-shard" model-00002-of-00002.safetensors
expect bad-config "$TMP/bad-config" config.json
expect unknown-arch "$TMP/unknown-arch" config.json gpt2
expect config-missing-key "$TMP/config-missing-key" config.json hidden_size
expect missing-directory "$TMP/no-such-model" "$TMP/no-such-model"

# ---- GGUF files: gguf_corrupt KIND writes $TMP/KIND.gguf from the good model, broken one way.
gguf_corrupt() {
    $PY - "$good" "$TMP/$1.gguf" "$1" <<'PYEOF'
import os, struct, sys
sys.path.insert(0, os.path.join(os.environ.get("RADIXSERVE_ROOT", "."), "tests"))
import gguf_write as gw

src, dst, kind = sys.argv[1:4]
w = gw.build(src, "f32", tokenizer=False)
tensors = {t[0]: i for i, t in enumerate(w.tensors)}
keys = {k[0]: i for i, k in enumerate(w.kv)}
if kind == "gguf-unsupported-type":  # Q5_K (13): its bytes unchanged, only the type
    n, dims, _, data = w.tensors[tensors["blk.0.ffn_up.weight"]]
    w.tensors[tensors["blk.0.ffn_up.weight"]] = (n, dims, 13, data)
elif kind == "gguf-missing-tensor":
    del w.tensors[tensors["blk.1.ffn_up.weight"]]
elif kind == "gguf-wrong-shape":
    n, dims, ty, data = w.tensors[tensors["blk.0.attn_q.weight"]]
    w.tensors[tensors["blk.0.attn_q.weight"]] = (n, dims[::-1], ty, data)
elif kind == "gguf-missing-key":
    del w.kv[keys["qwen3.block_count"]]
elif kind == "gguf-unknown-arch":
    w.kv[keys["general.architecture"]] = ("general.architecture", gw.STRING, "gpt2", None)
elif kind == "gguf-bad-alignment":
    w.kv.append(("general.alignment", gw.U32, 3, None))
w.write(dst)
raw = bytearray(open(dst, "rb").read())
if kind == "gguf-truncated":  # the last tensors' bytes are gone
    raw = raw[: len(raw) * 3 // 4]
elif kind == "gguf-truncated-header":
    raw = raw[:100]
elif kind == "gguf-bad-version":
    raw[4:8] = struct.pack("<I", 7)
elif kind == "gguf-huge-count":
    raw[16:24] = struct.pack("<Q", 1 << 60)
elif kind == "gguf-string-length":  # the first key's length
    raw[24:32] = struct.pack("<Q", 1 << 40)
elif kind == "gguf-value-type":  # the first key's value type
    klen = struct.unpack("<Q", raw[24:32])[0]
    raw[32 + klen : 36 + klen] = struct.pack("<I", 99)
open(dst, "wb").write(bytes(raw))
PYEOF
}

$PY tests/gguf_write.py "$good" "$TMP/good.gguf" --no-tokenizer
timeout 60 "$BIN" generate --model "$TMP/good.gguf" --prompt-ids 1,2,3 -n 2 --temperature 0 \
    >/dev/null 2>&1
ok $? "the unbroken GGUF generates (exit 0)"
for kind in gguf-truncated gguf-truncated-header gguf-bad-version gguf-huge-count \
    gguf-string-length gguf-value-type gguf-bad-alignment gguf-unsupported-type \
    gguf-missing-tensor gguf-wrong-shape gguf-missing-key gguf-unknown-arch; do
    gguf_corrupt "$kind" || ok 1 "$kind: writing the broken file"
done
G=$TMP
expect gguf-truncated "$G/gguf-truncated.gguf" gguf-truncated.gguf "outside the"
expect gguf-truncated-header "$G/gguf-truncated-header.gguf" gguf-truncated-header.gguf "exceeds the file"
expect gguf-bad-version "$G/gguf-bad-version.gguf" gguf-bad-version.gguf "version 7"
expect gguf-huge-count "$G/gguf-huge-count.gguf" gguf-huge-count.gguf "metadata count"
expect gguf-string-length "$G/gguf-string-length.gguf" gguf-string-length.gguf "metadata key 0"
expect gguf-value-type "$G/gguf-value-type.gguf" gguf-value-type.gguf "unknown value type 99"
expect gguf-bad-alignment "$G/gguf-bad-alignment.gguf" gguf-bad-alignment.gguf general.alignment
expect gguf-unsupported-type "$G/gguf-unsupported-type.gguf" blk.0.ffn_up.weight Q5_K
expect gguf-missing-tensor "$G/gguf-missing-tensor.gguf" "missing tensor blk.1.ffn_up.weight"
expect gguf-wrong-shape "$G/gguf-wrong-shape.gguf" blk.0.attn_q.weight "[64, 128]"
expect gguf-missing-key "$G/gguf-missing-key.gguf" gguf-missing-key.gguf qwen3.block_count
expect gguf-unknown-arch "$G/gguf-unknown-arch.gguf" gguf-unknown-arch.gguf gpt2

echo "1..$n"
[ "$failed" -eq 0 ] && rm -rf "$TMP" # kept for a look when something failed
