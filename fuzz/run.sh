#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD/fuzz for SECONDS each, JOBS at a time, from its
# committed seeds (fuzz/corpus/NAME, read only) into a scratch corpus (BUILD/corpus/NAME). Prints
# one line per target (executions, execs/s, coverage edges and features, corpus size) and fails
# when any target found something: its input is then in BUILD/findings/.
#
# Usage: fuzz/run.sh BUILD SECONDS [JOBS]
set -u
cd "$(dirname "$0")/.."
build=${1:?build dir} seconds=${2:?seconds} jobs=${3:-1}
mkdir -p "$build/findings" "$build/logs" "$build/tmp"
export RADIXSERVE_ROOT=$PWD TMPDIR=$PWD/$build/tmp
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() { # target binary
    local bin=$1 name
    name=$(basename "$bin")
    mkdir -p "$build/corpus/$name"
    "$bin" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$build/findings/$name-" "$build/corpus/$name" "fuzz/corpus/$name" \
        >"$build/logs/$name.log" 2>&1
    local rc=$? execs eps cov ft
    execs=$(awk '/stat::number_of_executed_units:/ {x = $2} END {print x}' "$build/logs/$name.log")
    eps=$(awk '/stat::average_exec_per_sec:/ {x = $2} END {print x}' "$build/logs/$name.log")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$build/logs/$name.log" | tail -1)
    printf '%-4s %-20s %10s execs %7s/s  %-22s corpus %s\n' "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" \
        "$name" "${execs:-?}" "${eps:-?}" "${cov:-cov: ?}" "$(ls "$build/corpus/$name" | wc -l)"
    [ $rc -eq 0 ] || { grep -E 'ERROR|SUMMARY|invariant|Test unit written' "$build/logs/$name.log" | head -5 | sed 's/^/     | /'; }
    return $rc
}
export -f run_one
export build seconds
targets=$(find "$build/fuzz" -maxdepth 1 -type f -executable -name 'fuzz_*' | sort)
[ -n "$targets" ] || { echo "no fuzz targets in $build/fuzz"; exit 1; }
echo "fuzzing each target for ${seconds}s, $jobs at a time (logs: $build/logs/)"
echo "$targets" | xargs -P "$jobs" -I{} bash -c 'run_one {}'
rc=$?
rm -rf "$build/tmp"
if [ $rc -eq 0 ]; then echo "fuzz: no findings"; else echo "fuzz: FINDINGS (inputs in $build/findings/)"; fi
exit $rc

