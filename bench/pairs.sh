#!/usr/bin/env bash
# pairs.sh — radixserve's engine against llama.cpp's llama-bench in interleaved pairs (issues 27
# and 19): each pair runs `llama-bench -t T -p 512 -n 128` on a GGUF, then bench_engine on the
# same weights with the same thread count, back to back, so both see the same minute of a shared
# host; the ratios of each pair, then their medians, are what count. A benchmark, not a test: run
# it on a quiet machine.
#
# Usage: bench/pairs.sh [--pairs N] [--threads T] [--weights bf16|q8_0|q4_0|q4_k_m]
#                       [--gguf FILE] [--model DIR] [--build DIR]
#   --pairs    interleaved pairs (default 3; the median needs an odd count to be one pair's)
#   --threads  threads of both (default 2)
#   --weights  what both run: bf16 = the model's BF16 safetensors against the BF16 GGUF; q8_0 /
#              q4_0 = bench_engine --weights (quantized at load) against llama-quantize's file of
#              that type; q4_k_m = bench_engine --model on the Q4_K_M GGUF itself (both read the
#              same file)
#   --gguf     llama.cpp's file (default /work/bench/qwen3-0.6b-WEIGHTS.gguf)
#   --model    the Hugging Face directory (default build/bench/qwen3-0.6b, bench/model.sh)
#   --build    the build holding bench/bench_engine (default build/release)
# Environment: LLAMA_BENCH (default /tmp/llama.cpp/build/bin/llama-bench).
# Output: each pair's four figures and ratios, then the medians; one JSON line per run of this
# script in build/bench/pairs-results.jsonl. Exit 2 (skipped) when llama-bench or the GGUF is
# absent.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
pairs=3 threads=2 weights=bf16 gguf='' model=build/bench/qwen3-0.6b build=build/release
while [ $# -gt 0 ]; do
    case $1 in
        --pairs) pairs=${2:-}; shift ;;
        --threads) threads=${2:-}; shift ;;
        --weights) weights=${2:-}; shift ;;
        --gguf) gguf=${2:-}; shift ;;
        --model) model=${2:-}; shift ;;
        --build) build=${2:-}; shift ;;
        *) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2; exit 2 ;;
    esac
    shift
done
lb=${LLAMA_BENCH:-/tmp/llama.cpp/build/bin/llama-bench}
gguf=${gguf:-/work/bench/qwen3-0.6b-$weights.gguf}
[ -x "$lb" ] || { echo "pairs.sh: skipped: $lb not found (set LLAMA_BENCH)"; exit 2; }
[ -f "$gguf" ] || { echo "pairs.sh: skipped: $gguf not found (--gguf)"; exit 2; }
[ -x "$build/bench/bench_engine" ] || { echo "pairs.sh: $build/bench/bench_engine not built" >&2; exit 1; }
case $weights in
    bf16) rs=("$model") ;;
    q8_0 | q4_0) rs=("$model" --weights "$weights") ;;
    q4_k_m) rs=("$gguf") ;;
    *) echo "pairs.sh: --weights bf16|q8_0|q4_0|q4_k_m" >&2; exit 2 ;;
esac
[ "$weights" = q4_k_m ] || bash bench/model.sh "$model" qwen3-0.6b >/dev/null || exit 1

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "pairs.sh: $weights, $threads threads, $pairs pairs, $cpu ($(nproc) cpus), llama-bench $lb on $gguf"
pp=() tg=() rpp=() rtg=()
for i in $(seq "$pairs"); do
    l=$("$lb" -m "$gguf" -t "$threads" -p 512 -n 128 -r 2 -o csv 2>/dev/null)
    # llama-bench's CSV: the row whose n_prompt/n_gen are 512/0 (pp512) or 0/128 (tg128)
    col() { echo "$l" | awk -F, -v p="$1" -v g="$2" 'NR == 1 {
            for (i = 1; i <= NF; i++) { if ($i == "n_prompt") np = i; if ($i == "n_gen") ng = i; if ($i == "avg_ts") ts = i }
            next }
        { gsub(/"/, "") } $np == p && $ng == g { print $ts }'; }
    lpp=$(col 512 0) ltg=$(col 0 128)
    r=$("$build/bench/bench_engine" "${rs[@]}" --threads "$threads" --prompt 512 --gen 128 --batch 1 --reps 2 2>&1)
    rpf=$(echo "$r" | awk -F'|' '/prefill, prompt/ { gsub(/ /, "", $3); print $3 }')
    rdc=$(echo "$r" | awk -F'|' '/decode, batch 1,/ { gsub(/ /, "", $3); print $3 }')
    if [ -z "$lpp" ] || [ -z "$ltg" ] || [ -z "$rpf" ] || [ -z "$rdc" ]; then
        echo "pairs.sh: pair $i: could not read a figure (llama-bench: '$lpp' '$ltg', bench_engine: '$rpf' '$rdc')" >&2
        echo "$r" | tail -5 >&2
        exit 1
    fi
    a=$(awk -v x="$rpf" -v y="$lpp" 'BEGIN { printf "%.3f", x / y }')
    b=$(awk -v x="$rdc" -v y="$ltg" 'BEGIN { printf "%.3f", x / y }')
    printf 'pair %d %s: prefill %s vs pp512 %s = %sx; decode %s vs tg128 %s = %sx\n' "$i" \
        "$(date -u +%H:%M:%S)" "$rpf" "$lpp" "$a" "$rdc" "$ltg" "$b"
    pp+=("$lpp") tg+=("$ltg") rpp+=("$a") rtg+=("$b")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mp=$(median "${rpp[@]}") mt=$(median "${rtg[@]}")
echo "median prefill ratio ${mp}x, median decode ratio ${mt}x (radixserve / llama.cpp, $weights)"
mkdir -p build/bench
printf '{"bench":"pairs","time":"%s","commit":"%s","cpu":"%s","weights":"%s","threads":%s,"pairs":%s,"prefill_ratios":[%s],"decode_ratios":[%s],"median_prefill_ratio":%s,"median_decode_ratio":%s}\n' \
    "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD 2>/dev/null)" "$cpu" "$weights" "$threads" "$pairs" \
    "$(IFS=,; echo "${rpp[*]}")" "$(IFS=,; echo "${rtg[*]}")" "$mp" "$mt" >>build/bench/pairs-results.jsonl
