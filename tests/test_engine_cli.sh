#!/usr/bin/env bash
# test_engine_cli.sh — `radixserve generate`: argument errors (exit 2), load errors (exit 1, one
# line naming the file), --top-logits JSON lines, --logits-out size, and the same tokens whatever
# --chunk, --threads say; seeded sampling reproducible.
set -u
cd "${RADIXSERVE_ROOT:-$(dirname "$0")/..}"
BIN=${BIN:-bin/radixserve}
TMP=${RADIXSERVE_TMP:-/tmp}/engine_cli
mkdir -p "$TMP"
M=models/stories260K
n=0 failed=0
check() { # check "what" command...
    local what=$1
    shift
    n=$((n + 1))
    if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; failed=1; fi
}
gen() { "$BIN" generate "$@" 2>"$TMP/err"; }

gen >/dev/null; check "no arguments: exit 2" test $? -eq 2
grep -q "usage:" "$TMP/err"; check "no arguments: usage printed" test $? -eq 0
gen --model $M --prompt-ids 1 --temperature abc >/dev/null; check "bad --temperature: exit 2" test $? -eq 2
gen --model $M --prompt-ids 1,,2 >/dev/null; check "bad --prompt-ids: exit 2" test $? -eq 2
gen --model $M --prompt-ids 1 --frobnicate 3 >/dev/null; check "unknown option: exit 2" test $? -eq 2
gen --model $M --prompt-ids 1 --kv-dtype f8 >/dev/null; check "bad --kv-dtype: exit 2" test $? -eq 2
gen --model $M --prompt-ids 1 --weights q3_k >/dev/null; check "bad --weights: exit 2" test $? -eq 2
gen --model "$TMP/nowhere" --prompt-ids 1 >/dev/null; rc=$?
check "missing model: exit 1 ($(cat "$TMP/err"))" test $rc -eq 1
check "missing model: one line naming config.json" bash -c "[ \$(wc -l <'$TMP/err') -eq 1 ] && grep -q config.json '$TMP/err'"
gen --model $M --prompt-ids 1,9999 >/dev/null; rc=$?
check "prompt id outside the vocabulary: exit 1 ($(cat "$TMP/err"))" test $rc -eq 1

gen --model $M --prompt-ids 1 -n 20 --temperature 0 --ignore-eos --print-ids >"$TMP/plain"
check "greedy --print-ids output starts with the story's ids" grep -q "^403 407 261 378 432" "$TMP/plain"
gen --model $M --prompt-ids 1 -n 30 --temperature 0 >"$TMP/text"
check "greedy text: $(cat "$TMP/text")" grep -q "^Once upon a time, there was a little girl named Lily" "$TMP/text"
gen --model $M --prompt "Once upon a time" -n 8 --temperature 0 --print-ids >"$TMP/p1"
gen --model $M --prompt-ids 1,403,407,261,378 -n 8 --temperature 0 --print-ids >"$TMP/p2"
check "--prompt TEXT == --prompt-ids of its tokens (BOS added)" cmp -s "$TMP/p1" "$TMP/p2"
mkdir -p "$TMP/notok" && cp $M/config.json $M/model.safetensors "$TMP/notok/"
gen --model "$TMP/notok" --prompt-ids 1 -n 3 --temperature 0 >"$TMP/notok.out"
check "no tokenizer: ids printed" grep -q "^403 407 261$" "$TMP/notok.out"
gen --model "$TMP/notok" --prompt "Once" -n 3 >/dev/null; rc=$?
check "no tokenizer with --prompt: exit 1 ($(cat "$TMP/err"))" test $rc -eq 1
gen --model $M --prompt-ids 1 -n 20 --temperature 0 --ignore-eos --top-logits 3 \
    --logits-out "$TMP/logits.bin" >"$TMP/top"
check "--top-logits: 20 JSON lines, 3 pairs each, id = the best" /usr/bin/python3 -c "
import json, sys
lines = open('$TMP/top').read().splitlines()
recs = [json.loads(l) for l in lines]
assert len(recs) == 20
for r in recs:
    assert len(r['top']) == 3 and r['top'][0][0] == r['id']
    assert r['top'][0][1] >= r['top'][1][1] >= r['top'][2][1]
assert ' '.join(str(r['id']) for r in recs) == open('$TMP/plain').read().strip()
"
check "--logits-out: 20 steps x 512 float32" test "$(stat -c %s "$TMP/logits.bin")" -eq $((20 * 512 * 4))
check "--logits-out agrees with --top-logits (%.9g round-trips)" /usr/bin/python3 -c "
import json, struct
raw = open('$TMP/logits.bin', 'rb').read()
recs = [json.loads(l) for l in open('$TMP/top')]
for s, r in enumerate(recs):
    for i, v in r['top']:
        assert struct.unpack_from('<f', raw, (s * 512 + i) * 4)[0] == struct.unpack('<f', struct.pack('<f', v))[0]
"
P=1,403,407,261,378,432,383,286,261,376,298,315,421
gen --model $M --prompt-ids $P -n 12 --temperature 0 --top-logits 4 >"$TMP/whole"
gen --model $M --prompt-ids $P -n 12 --temperature 0 --top-logits 4 --chunk 5 >"$TMP/chunk5"
gen --model $M --prompt-ids $P -n 12 --temperature 0 --top-logits 4 --chunk 1 --threads 1 >"$TMP/chunk1"
gen --model $M --prompt-ids $P -n 12 --temperature 0 --top-logits 4 --threads 3 >"$TMP/t3"
check "--chunk 5 == whole prompt (bit-identical logits)" cmp -s "$TMP/whole" "$TMP/chunk5"
check "--chunk 1 --threads 1 == whole prompt" cmp -s "$TMP/whole" "$TMP/chunk1"
check "--threads 3 == default threads" cmp -s "$TMP/whole" "$TMP/t3"
gen --model $M --prompt-ids $P -n 12 --temperature 0 --kv-dtype bf16 >"$TMP/kvbf16"
check "--kv-dtype bf16 runs ($(head -c 40 "$TMP/kvbf16"))" test -s "$TMP/kvbf16"
for w in q8_0 q4_k_m q4_0; do
    gen --model $M --prompt-ids $P -n 12 --temperature 0 --print-ids --weights $w >"$TMP/w_$w"
    check "--weights $w runs, progress shown ($(head -c 40 "$TMP/w_$w"))" \
        bash -c "test -s '$TMP/w_$w' && grep -q 'quantizing weights to $w: 36/36 matrices' '$TMP/err'"
done
gen --model $M --prompt-ids $P -n 12 --temperature 0 --print-ids >"$TMP/w_f32"
check "--weights q8_0: the F32 model's 12 greedy tokens" cmp -s "$TMP/w_f32" "$TMP/w_q8_0"
gen --model $M --prompt-ids 1 -n 30 --temperature 1 --seed 17 --ignore-eos --print-ids >"$TMP/s1"
gen --model $M --prompt-ids 1 -n 30 --temperature 1 --seed 17 --ignore-eos --print-ids >"$TMP/s2"
gen --model $M --prompt-ids 1 -n 30 --temperature 1 --seed 18 --ignore-eos --print-ids >"$TMP/s3"
check "same --seed, same tokens" cmp -s "$TMP/s1" "$TMP/s2"
check "another --seed, other tokens" bash -c "! cmp -s '$TMP/s1' '$TMP/s3'"
gen --model $M --prompt-ids 1 --temperature 0 -n 0 >"$TMP/n0"
check "-n 0 generates nothing" test "$(tr -d '\n' <"$TMP/n0")" = ""
echo "1..$n"
exit $failed
