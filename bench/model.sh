#!/usr/bin/env bash
# model.sh — write a benchmark model directory once: bench/model.sh DIR PRESET
# (PRESET: a bench/make_model.py preset, e.g. qwen3-0.6b: BF16, Qwen3-0.6B's exact shapes, 1.2 GB).
# A no-op when DIR/config.json exists. The model is written to DIR.partial and renamed when
# complete, so an interrupted write never leaves a directory that looks finished.
set -euo pipefail
[ $# = 2 ] || { echo "usage: bench/model.sh DIR PRESET" >&2; exit 2; }
dir=${1%/} preset=$2
[ -f "$dir/config.json" ] && exit 0
[ -e "$dir" ] && { echo "bench/model.sh: $dir exists but has no config.json; remove it" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
echo "== writing the benchmark model $dir (bench/make_model.py --preset $preset --dtype bf16)" >&2
rm -rf "$dir.partial"
mkdir -p "$(dirname "$dir")"
/usr/bin/python3 "$root/bench/make_model.py" --preset "$preset" --dtype bf16 --out "$dir.partial" >&2
mv "$dir.partial" "$dir"
