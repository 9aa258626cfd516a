#!/usr/bin/env bash
# test_bench_smoke.sh — the benchmark runners work first time on a quiet machine: serve_bench.sh
# (issue 15) on a tiny random Qwen3, few-shot only, with the cache on (concurrency 16, 4, 1) and
# off; its JSON lines say every request generated exactly max_tokens (ignore_eos honoured), the
# cache served the shared prompt when on and nothing when off, and no server it started is left
# running; a server that cannot start is a clear failure, not a hang. When built (make bench-bins):
# bench_prefix (issue 11) gives bit-identical logits from the cache on a short prompt, and
# bench_engine (issue 9) runs and counts the weight bytes a token streams, also with the
# weights quantized at load (issue 19) and under a LoRA adapter (issue 26).
set -u
ROOT=${RADIXSERVE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT" || exit 1
BIN=${BIN:-bin/radixserve}
BUILD=${BUILD:-build/release}
TMP=${RADIXSERVE_TMP:-/tmp}/test_bench_smoke.$$
mkdir -p "$TMP"
PY=/usr/bin/python3
n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
trap 'rm -rf "$TMP"' EXIT

if [ ! -x "$BIN" ] || ! command -v node >/dev/null; then echo "ok 1 - # SKIP $BIN or node missing"; exit 0; fi
model=$TMP/tiny-qwen3
if ! $PY bench/make_model.py --out "$model" --preset tiny-qwen3 --dtype bf16 >/dev/null 2>&1; then
    echo "ok 1 - # SKIP bench/make_model.py could not write the tiny Qwen3 model"; exit 0
fi

out=$TMP/serve.jsonl
timeout -k 5 300 bash bench/serve_bench.sh --quick --only radixserve --workloads few-shot \
    --model "$model" --bin "$BIN" --out "$out" >"$TMP/log" 2>&1
rc=$?
ok $rc "serve_bench.sh --quick --only radixserve --workloads few-shot exits 0 (status $rc)"
[ $rc = 0 ] || sed 's/^/# /' "$TMP/log"
# Each row: server, cache, concurrency, requests, output tokens, cached tokens.
rows=$(node -e '
    const fs = require("fs");
    for (const l of fs.readFileSync(process.argv[1], "utf8").trim().split("\n")) {
        const j = JSON.parse(l);
        console.log([j.server, j.prefix_cache, j.concurrency, j.requests, j.output_tokens, j.cached_tokens].join(" "));
    }' "$out" 2>/dev/null)
echo "$rows" | sed "s/^/# /"
ok "$([ "$(echo "$rows" | grep -c .)" = 4 ]; echo $?)" "four JSON lines: cache on at concurrency 16, 4, 1 and cache off at 16"
ok "$(echo "$rows" | awk '$4 != 4 || $5 != 32 { bad = 1 } END { exit bad || NR == 0 }'; echo $?)" \
    "every run: 4 requests, 32 output tokens (4 x max_tokens 8: ignore_eos honoured)"
ok "$(echo "$rows" | awk '$2 == "on" && $6 <= 0 { bad = 1 } $2 == "on" { on++ } END { exit bad || on != 3 }'; echo $?)" \
    "cache on: the shared few-shot prompt is served from the cache (cached_tokens > 0)"
ok "$(echo "$rows" | awk '$2 == "off" && $6 != 0 { bad = 1 } $2 == "off" { off++ } END { exit bad || off != 1 }'; echo $?)" \
    "--no-prefix-cache: nothing served from the cache"
ok "$(grep -q '^| few-shot | 16 | [0-9.]* |.* [0-9.]*x |' "$TMP/log"; echo $?)" "the table shows few-shot at concurrency 16 with the cache's gain"
ok "$(! pgrep -f "$model" >/dev/null; echo $?)" "no server left running"

printf '#!/bin/sh\necho "cannot start" >&2\nexit 3\n' >"$TMP/broken"
chmod +x "$TMP/broken"
timeout -k 5 60 bash bench/serve_bench.sh --quick --only radixserve --workloads unique \
    --model "$model" --bin "$TMP/broken" --out "$TMP/none.jsonl" >"$TMP/log2" 2>&1
rc=$?
ok "$([ $rc = 1 ] && grep -q 'exited while starting' "$TMP/log2" && grep -q 'cannot start' "$TMP/log2" &&
    grep -q 'nothing was measured' "$TMP/log2"; echo $?)" "a server that cannot start: status 1 with its log, no hang (status $rc)"

if [ -x "$BUILD/bench/bench_prefix" ]; then
    timeout -k 5 120 "$BUILD/bench/bench_prefix" "$model" --prompt 300 --cached 250 --chunk 64 \
        --reps 1 --json "$TMP/prefix.jsonl" >"$TMP/log3" 2>&1
    rc=$?
    ok "$([ $rc = 0 ] && grep -q '"hit_tokens":240,' "$TMP/prefix.jsonl" &&
        grep -q '"logits_identical":true' "$TMP/prefix.jsonl"; echo $?)" \
        "bench_prefix: 240 of 250 shared tokens hit (whole blocks), warm logits == cold (status $rc)"
else
    ok 0 "# SKIP $BUILD/bench/bench_prefix not built (make bench-bins)"
fi
if [ -x "$BUILD/bench/bench_engine" ]; then
    timeout -k 5 120 "$BUILD/bench/bench_engine" "$model" --prompt 64 --gen 4 --batch 1,3 --reps 1 \
        --json "$TMP/engine.jsonl" >"$TMP/log4" 2>&1
    rc=$?
    # tiny-qwen3 has 9,847,232 BF16 parameters (tied embeddings), 9,846,784 of them in matrices:
    # 2 bytes each per token (norms are F32 copies, not counted).
    ok "$([ $rc = 0 ] && grep -q '"weight_bytes_per_token":19693568,' "$TMP/engine.jsonl" &&
        grep -q '"decode_b3_tok_s":[0-9]' "$TMP/engine.jsonl"; echo $?)" \
        "bench_engine: prefill and decode at batch 1 and 3 run; 19,693,568 weight bytes per token (status $rc)"
    timeout -k 5 120 "$BUILD/bench/bench_engine" "$model" --prompt 16 --gen 4 --batch 1 --reps 1 \
        --weights q8_0 --json "$TMP/engine.jsonl" >"$TMP/log6" 2>&1
    rc=$?
    # Q8_0: 34 bytes per 32 weights, every row of tiny-qwen3 a multiple of 32.
    ok "$([ $rc = 0 ] && grep -q '"weight_bytes_per_token":10462208,.*"weights":"q8_0","tensor_bytes":10462208,"rss_after_load":[1-9]' "$TMP/engine.jsonl" &&
        grep -q 'weight memory: 0.010 GB of tensors, RSS after load' "$TMP/log6"; echo $?)" \
        "bench_engine --weights q8_0: 10,462,208 bytes per token (17/32 of BF16's), RSS after load printed (status $rc)"
    timeout -k 5 120 "$BUILD/bench/bench_engine" "$model" --prompt 16 --gen 4 --batch 4 --reps 1 \
        --context 40 --shared --json "$TMP/engine.jsonl" >"$TMP/log5" 2>&1
    rc=$?
    ok "$([ $rc = 0 ] && grep -q '"context":40,"shared":1,"decode_b4_tok_s":[0-9]' "$TMP/engine.jsonl"; echo $?)" \
        "bench_engine --context 40 --shared: prefill and decode behind a shared cached prefix run (status $rc)"
    $PY bench/make_lora.py --model "$model" --out "$TMP/lora" --r 16 --dtype bf16 >/dev/null 2>&1
    timeout -k 5 120 "$BUILD/bench/bench_engine" "$model" --prompt 16 --gen 4 --batch 1,8 --reps 1 \
        --lora "$TMP/lora" --json "$TMP/engine.jsonl" >"$TMP/log7" 2>&1
    rc=$?
    ok "$([ $rc = 0 ] && grep -q '"decode_b8_tok_s":[0-9.]*,.*"lora":"[^"]*/lora","lora_rank":16,' "$TMP/engine.jsonl" &&
        grep -q 'under the LoRA adapter .* (r = 16)' "$TMP/log7"; echo $?)" \
        "bench_engine --lora (bench/make_lora.py, r 16, all seven modules): decode at batch 1 and 8 runs (status $rc)"
else
    ok 0 "# SKIP $BUILD/bench/bench_engine not built (make bench-bins)"
fi
echo "1..$n"
[ $fails = 0 ]
