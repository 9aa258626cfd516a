#!/usr/bin/env bash
# run.sh — every benchmark, in order (what `make bench` runs). A benchmark, not a test: run it
# on a quiet machine (no builds, no helpers, no other servers); figures taken on a busy machine
# only show that the benchmarks work.
#
# Usage: bench/run.sh [BUILD] [--quick] [--skip LIST]
#   BUILD    build directory holding bench/bench_* (default build/release; `make bench-bins`)
#   --quick  smoke run (under two minutes): tiny sizes, a tiny random Qwen3, one repetition
#   --skip   comma-separated steps to leave out: kernels,engine,pairs,peers,cache,tokenizer,
#            prefix,grammar,serve
# Environment: BIN (the radixserve binary, default bin/radixserve); LLAMA_GIT and IK_GIT (bare git
# dirs of github:unslothai/llama.cpp and github:ikawrakow/ik_llama.cpp, from the search tool's
# fetch) turn the peers step on; PEERS_WORK as bench/peers.sh has it; serve_bench.sh's variables
# (LLAMA_SERVER, LLAMA_SRC, PEERS_TOOLS, GGUF, LOAD_TIMEOUT, RUN_TIMEOUT) pass through.
#
# Steps (issue): kernels = bench_kernels, bandwidth, decode GEMV, prefill GEMM, attention (9);
# engine = bench_engine, prefill pp512 and decode at batch 1 and 8 end to end (9), its per-phase
# decode profile at batch 1 and 16 (bench_engine_profile, 27), then the
# same after cached context (engine-context, engine-shared: issue 15's shapes), then pp512 and
# decode with the weights quantized at load (engine-q8_0, engine-q4_k_m, engine-q4_0, with
# weight memory: RSS after load vs tensor bytes; issue 19), then decode under an r = 16 LoRA
# adapter on all seven modules (engine-lora, issue 26); pairs = bench/pairs.sh, three
# interleaved pairs of llama-bench and bench_engine on the same weights (BF16, Q8_0, Q4_0,
# Q4_K_M) with the median ratios, when LLAMA_BENCH and the GGUFs (PAIRS_GGUF_DIR, default
# /work/bench, written by ../shared/peers' converter and llama-quantize) are there (27, 19); peers =
# bench/peers.sh, llama-bench -t 2 -p 512 -n 128 of llama.cpp and ik_llama.cpp on the same
# weights (9; builds them the first time, ~50 minutes); cache = bench_cache (11); tokenizer =
# bench_tokenizer, if built (10); prefix = bench_prefix, a 2,000-token prompt cold vs 1,900
# tokens cached (11); grammar = bench_grammar, mask time per step over Qwen3's vocabulary and
# constrained vs free batch-1 decode (20); serve = bench/serve_bench.sh against llama-server (15).
# The full run's model is build/bench/qwen3-0.6b (BF16, Qwen3-0.6B's exact shapes), written
# once by bench/model.sh (bench/make_model.py); every step uses that one file.
#
# Output: each step's own table on stdout; every step's output also in
# build/bench/logs/STEP-TIME.txt and one JSON line per step in build/bench/results.jsonl
# ({"bench", "time", "commit", "quick", "status", "seconds", "figures" (every "name number"
# line), "lines"}); bench_engine, bench_prefix and serve_bench add their own JSON lines
# (engine-results.jsonl, prefix-results.jsonl, serve-results.jsonl). A failing step is reported
# and the others still run; exit status 1 then.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

build=build/release quick=0 skip=''
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --skip) skip=${2:-}; shift ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        -*) echo "bench/run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) build=$1 ;;
    esac
    shift
done
bin=${BIN:-bin/radixserve}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
logs=build/bench/logs
results=build/bench/results.jsonl
mkdir -p "$logs" || exit 1
RADIXSERVE_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git status --porcelain 2>/dev/null | grep -qv '^??' && RADIXSERVE_COMMIT=$RADIXSERVE_COMMIT-dirty
export RADIXSERVE_COMMIT # bench_prefix writes it into its JSON line

if [ $quick = 1 ]; then
    model=build/bench/tiny-qwen3 preset=tiny-qwen3 limit=120 serve_limit=600
    kernels_args=(--quick) cache_args=(100000) tok_args=(1) quick_args=(--quick)
else
    model=build/bench/qwen3-0.6b preset=qwen3-0.6b limit=3600 serve_limit=21600
    kernels_args=() cache_args=() tok_args=() quick_args=()
fi

trap 'echo "bench/run.sh: interrupted" >&2; exit 130' INT TERM
failed=()
note_failure() { failed+=("$1"); echo "bench/run.sh: step $1 failed ($2)" >&2; }

# One step: run it under a time limit with its output on the terminal and in a log, then one
# JSON line for it (figures: every "name number ..." line, as bench_cache prints them).
step() { # name command...
    local name=$1 log=$logs/$1-$stamp.txt t0=$SECONDS rc
    shift
    echo "== $name: $*"
    # --foreground: the step stays in this process group, so Ctrl-C reaches it (and
    # serve_bench.sh's trap stops its servers); on a timeout the step gets SIGTERM.
    timeout --foreground -k 10 "$limit" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 124 ] && echo "bench/run.sh: $name timed out after ${limit}s" >&2
    node -e '
        const fs = require("fs");
        const [log, name, commit, quick, status, secs] = process.argv.slice(1);
        const lines = fs.readFileSync(log, "utf8").split("\n").filter(Boolean);
        const figures = {};
        for (const l of lines) {
            const m = /^([A-Za-z_][\w.]*) (-?[\d.]+(?:e[+-]?\d+)?)( |$)/.exec(l);
            if (m) figures[m[1]] = +m[2];
        }
        console.log(JSON.stringify({ bench: name, time: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
            commit, quick: quick === "1", status: +status, seconds: +secs, figures, lines }));
    ' "$log" "$name" "$RADIXSERVE_COMMIT" "$quick" "$rc" "$((SECONDS - t0))" >>"$results"
    [ "$rc" = 0 ] || note_failure "$name" "status $rc; log $log"
}

want() { # step name: not in --skip
    [[ ",$skip," != *",$1,"* ]] && return 0
    echo "== $1: skipped (--skip)"
    return 1
}

need() { # bench binary name
    [ -x "$build/bench/$1" ] && return 0
    note_failure "$1" "$build/bench/$1 not built: make bench-bins BUILD=$build"
    return 1
}

command -v node >/dev/null || { echo "bench/run.sh: node not found" >&2; exit 1; }
echo "bench/run.sh: $build, commit $RADIXSERVE_COMMIT, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)$([ $quick = 1 ] && echo ', QUICK (smoke only)')"
load1=$(cut -d' ' -f1 /proc/loadavg)
if [ $quick = 0 ] && awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "bench/run.sh: warning: load average $load1; figures from a busy machine are not results" >&2
fi

# The peers' llama-server and GGUF serve serve_bench too, unless it was given its own.
use_peers_server() {
    local pw=${PEERS_WORK:-/tmp/radixserve-peers} g
    g=${PEERS_WORK:-/tmp/radixserve-peers}/$(basename "$model").gguf
    [ -z "${LLAMA_SERVER:-}" ] && [ ! -x /tmp/llama.cpp/build/bin/llama-server ] &&
        [ -x "$pw/llama.cpp/build/bin/llama-server" ] &&
        export LLAMA_SERVER=$pw/llama.cpp/build/bin/llama-server LLAMA_SRC=$pw/llama.cpp
    [ -z "${GGUF:-}" ] && [ -f "$g" ] && export GGUF=$g
    return 0
}

for st in engine prefix serve; do
    [[ ",$skip," == *",$st,"* ]] && continue
    bash bench/model.sh "$model" "$preset" || note_failure model "bench/model.sh $model $preset"
    break
done
want kernels && need bench_kernels && step kernels "$build/bench/bench_kernels" "${kernels_args[@]}"
want engine && need bench_engine &&
    step engine "$build/bench/bench_engine" "$model" "${quick_args[@]}" --json build/bench/engine-results.jsonl
# Where a decode step's time goes, batch 1 and 16 (issue 27): bench_engine built with the
# per-phase marks of engine/profile.h.
want engine && need bench_engine_profile &&
    step engine-profile "$build/bench/bench_engine_profile" "$model" "${quick_args[@]}" --prompt 64 \
        --batch 1,16 --gen 32 --reps 1
# The shapes a server runs: a 512-token chunk of a long prompt and 16 decode rows after 1,024
# cached positions each; 16 decode rows behind one 1,792-token shared prompt, beside a
# 128-token chunk (serve's --mixed-prefill).
ctx=1024 shared_ctx=1792
[ $quick = 1 ] && ctx=64 shared_ctx=64
want engine && need bench_engine &&
    step engine-context "$build/bench/bench_engine" "$model" "${quick_args[@]}" --context $ctx \
        --batch 16 --gen 16 --reps 1 --json build/bench/engine-results.jsonl
want engine && need bench_engine &&
    step engine-shared "$build/bench/bench_engine" "$model" "${quick_args[@]}" --context $shared_ctx \
        --shared --prompt 128 --batch 16 --gen 16 --reps 1 --json build/bench/engine-results.jsonl
# LoRA (issue 26): decode at batch 1 and 8 with every sequence under one r = 16 adapter on all
# seven modules (bench/make_lora.py, written once beside the model), to set beside `engine`.
lora_dir=$model-lora-r16
if want engine && need bench_engine; then
    [ -f "$lora_dir/adapter_model.safetensors" ] ||
        /usr/bin/python3 bench/make_lora.py --model "$model" --out "$lora_dir" --r 16 \
            --alpha 32 --dtype bf16 >/dev/null || note_failure engine-lora "bench/make_lora.py"
    step engine-lora "$build/bench/bench_engine" "$model" "${quick_args[@]}" --lora "$lora_dir" \
        --prompt 64 --reps 1 --json build/bench/engine-results.jsonl
fi
for wq in q8_0 q4_k_m q4_0; do
    want engine && need bench_engine &&
        step engine-$wq "$build/bench/bench_engine" "$model" "${quick_args[@]}" --weights $wq \
            --batch 1 --json build/bench/engine-results.jsonl
done
# Interleaved pairs against llama-bench on the same weights, medians of three (issues 27, 19);
# needs a built llama-bench (LLAMA_BENCH) and llama.cpp's GGUF files of the model (pairs.sh).
lbench=${LLAMA_BENCH:-/tmp/llama.cpp/build/bin/llama-bench}
for wq in bf16 q8_0 q4_0 q4_k_m; do
    if ! want pairs || [ $quick = 1 ]; then
        break
    elif [ ! -x "$lbench" ] || [ ! -f "${PAIRS_GGUF_DIR:-/work/bench}/qwen3-0.6b-$wq.gguf" ]; then
        echo "== pairs-$wq: skipped (needs $lbench and ${PAIRS_GGUF_DIR:-/work/bench}/qwen3-0.6b-$wq.gguf)"
    else
        step pairs-$wq bash bench/pairs.sh --weights $wq --model "$model" --build "$build" \
            --gguf "${PAIRS_GGUF_DIR:-/work/bench}/qwen3-0.6b-$wq.gguf"
    fi
done
if ! want peers; then
    :
elif [ $quick = 1 ]; then
    echo "== peers: skipped (--quick; it builds llama.cpp and ik_llama.cpp)"
elif [ -z "${LLAMA_GIT:-}" ] || [ -z "${IK_GIT:-}" ]; then
    echo "== peers: skipped (set LLAMA_GIT and IK_GIT to the bare git dirs of github:unslothai/llama.cpp and github:ikawrakow/ik_llama.cpp)"
else
    limit=$((limit * 3)) step peers bash bench/peers.sh "$LLAMA_GIT" "$IK_GIT" "$ROOT/$model"
fi
use_peers_server
want cache && need bench_cache && step cache "$build/bench/bench_cache" "${cache_args[@]}"
if ! [ -x "$build/bench/bench_tokenizer" ]; then
    echo "== tokenizer: skipped ($build/bench/bench_tokenizer not built)"
elif want tokenizer; then
    step tokenizer "$build/bench/bench_tokenizer" "${tok_args[@]}"
fi
want prefix && need bench_prefix &&
    step prefix "$build/bench/bench_prefix" "$model" "${quick_args[@]}" --json build/bench/prefix-results.jsonl
want grammar && need bench_grammar &&
    step grammar "$build/bench/bench_grammar" --model "$model" "${quick_args[@]}"
# serve_bench has its own time limits per server and run, and its own JSON lines.
want serve && limit=$serve_limit step serve bash bench/serve_bench.sh "${quick_args[@]}" --bin "$bin" --model "$model"

echo
echo "results: $results (one JSON line per step); build/bench/engine-results.jsonl,"
echo "prefix-results.jsonl, serve-results.jsonl; logs in $logs"
if [ ${#failed[@]} -gt 0 ]; then
    echo "bench/run.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "bench/run.sh: all steps finished"
