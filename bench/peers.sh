#!/usr/bin/env bash
# peers.sh — the peers' raw speed on our benchmark model: builds llama.cpp and ik_llama.cpp
# outside the repository, converts a Hugging Face model directory to GGUF (same weights, same
# precision) and runs `llama-bench -t 2 -p 512 -n 128` on both. A benchmark, not a test: run it on
# a quiet machine; the first run builds both trees (about 25 minutes each on 2 cores).
#
# Usage: bench/peers.sh LLAMA_CPP_GIT_DIR IK_LLAMA_CPP_GIT_DIR [MODEL_DIR]
#   *_GIT_DIR:  bare git directories of github:unslothai/llama.cpp and github:ikawrakow/ik_llama.cpp
#               (the search tool's `fetch` returns them; see ../shared/peers/README.md)
#   MODEL_DIR:  a Qwen3 Hugging Face directory (default: the random-weight Qwen3-0.6B-shaped BF16
#               model, written once by bench/make_model.py)
# Environment:
#   PEERS_WORK  where trees, models and results go (default /tmp/radixserve-peers)
#   PEERS_TOOLS the build and conversion scripts (default ../shared/peers beside the repository)
#   PEERS_THREADS llama-bench threads (default 2)
# Output: llama-bench's tables on stdout and in $PEERS_WORK/results.md. Nothing is written into
# the repository, and none of the peers' code is ever committed.
set -euo pipefail

if [ $# -lt 2 ]; then
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
llama_git=$1 ik_git=$2
work=${PEERS_WORK:-/tmp/radixserve-peers}
tools=${PEERS_TOOLS:-$root/../shared/peers}
threads=${PEERS_THREADS:-2}
model=${3:-$work/qwen3-0.6b-bf16}
python=/usr/bin/python3 # Debian's, with numpy

for f in "$tools/build-llama-cpp.sh" "$tools/hf_to_gguf.py"; do
    [ -f "$f" ] || { echo "peers.sh: $f not found (set PEERS_TOOLS)" >&2; exit 1; }
done
for g in "$llama_git" "$ik_git"; do
    git --git-dir="$g" rev-parse HEAD >/dev/null 2>&1 || { echo "peers.sh: $g is not a git dir" >&2; exit 1; }
done
case "$work" in "$root"|"$root"/*) echo "peers.sh: PEERS_WORK must be outside the repository" >&2; exit 1 ;; esac
mkdir -p "$work"

# Build each peer once; a tree with its binaries already built is reused.
build() { # name git_dir
    local out=$work/$1
    if [ -x "$out/build/bin/llama-bench" ]; then
        echo "== $1: already built in $out"
    else
        echo "== building $1 in $out (long: ~25 minutes on 2 cores)"
        bash "$tools/build-llama-cpp.sh" "$2" "$out"
    fi
}
build llama.cpp "$llama_git"
build ik_llama.cpp "$ik_git"

if [ ! -f "$model/config.json" ]; then
    echo "== writing the benchmark model to $model"
    "$python" "$root/bench/make_model.py" --preset qwen3-0.6b --dtype bf16 --out "$model"
fi
gguf=$work/$(basename "$model").gguf
if [ ! -f "$gguf" ] || [ "$model/model.safetensors" -nt "$gguf" ]; then
    echo "== converting $model to $gguf"
    "$python" "$tools/hf_to_gguf.py" "$model" "$gguf" "$work/llama.cpp"
fi

results=$work/results.md
{
    echo "# llama-bench -t $threads -p 512 -n 128 on $gguf ($(date -u +%FT%TZ), $(nproc) cores)"
    for peer in llama.cpp ik_llama.cpp; do
        echo
        echo "## $peer ($(cut -c1-12 "$work/$peer/SOURCE_COMMIT" 2>/dev/null || echo unknown))"
        echo
        "$work/$peer/build/bin/llama-bench" -m "$gguf" -t "$threads" -p 512 -n 128
    done
} | tee "$results"
echo "results: $results"
