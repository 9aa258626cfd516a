#!/usr/bin/env bash
# The test runner: runs every test and prints the closing line "N passed, N failed, N skipped".
#
# A test is any of: a C program tests/test_*.c (built into $BUILD/tests/), a shell script
# tests/test_*.sh, a Python script tests/test_*.py (run by Debian's /usr/bin/python3, which has
# torch, numpy and jinja2), a Node script tests/js/test_*.mjs. Each prints TAP lines
# ("ok N - ...", "not ok N - ...", "... # SKIP why"); a test that exits non-zero without
# reporting a failure (a crash, a timeout) counts as one failure.
#
# Usage: tests/run.sh [FILTER...]   — only tests whose name contains one of the FILTER words.
# Environment: BUILD (build dir), BIN (the radixserve binary), MODE (release|asan|tsan),
# TEST_TIMEOUT (seconds per test, default 900).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
BIN=${BIN:-bin/radixserve}
MODE=${MODE:-release}
export BUILD BIN MODE
export RADIXSERVE_ROOT=$PWD
export RADIXSERVE_TMP=${RADIXSERVE_TMP:-$PWD/build/test-tmp}
mkdir -p "$RADIXSERVE_TMP"
timeout_s=${TEST_TIMEOUT:-900}
log_dir=$BUILD/test-logs
mkdir -p "$log_dir"

tests=()
for f in "$BUILD"/tests/test_*; do [ -x "$f" ] && tests+=("$f"); done
for f in tests/test_*.sh tests/test_*.py tests/js/test_*.mjs; do [ -f "$f" ] && tests+=("$f"); done

selected=()
for t in "${tests[@]}"; do
    if [ $# -eq 0 ]; then selected+=("$t"); continue; fi
    for w in "$@"; do case "$t" in *"$w"*) selected+=("$t"); break ;; esac; done
done

total_pass=0 total_fail=0 total_skip=0
for t in "${selected[@]}"; do
    name=$(basename "$t")
    log="$log_dir/$name.log"
    case "$t" in
        *.sh) cmd=(bash "$t") ;;
        *.py) cmd=(/usr/bin/python3 "$t") ;;
        *.mjs) cmd=(node "$t") ;;
        *) cmd=("$t") ;;
    esac
    start=$(date +%s)
    timeout -k 10 "$timeout_s" "${cmd[@]}" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    pass=$(grep -Ec '^ok [0-9]+' "$log" || true)
    skip=$(grep -Ec '^ok [0-9]+.*# SKIP' "$log" || true)
    fail=$(grep -Ec '^not ok [0-9]+' "$log" || true)
    pass=$((pass - skip))
    if [ $rc -ne 0 ] && [ "$fail" -eq 0 ]; then
        fail=1
        echo "not ok - $name exited with status $rc (crash or timeout)" >>"$log"
    fi
    if [ $rc -eq 0 ] && [ $((pass + fail + skip)) -eq 0 ]; then
        fail=1
        echo "not ok - $name reported no checks" >>"$log"
    fi
    status=PASS
    [ "$fail" -gt 0 ] && status=FAIL
    printf '%-4s %-40s %4d passed %3d failed %3d skipped %5ds\n' "$status" "$name" "$pass" "$fail" "$skip" "$secs"
    if [ "$fail" -gt 0 ]; then
        grep -E '^not ok|^#' "$log" | head -40 | sed 's/^/     | /'
        tail -5 "$log" | sed 's/^/     > /'
    fi
    grep -E '^ok [0-9]+.*# SKIP' "$log" | sed 's/^/     skip: /' | head -5
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
    total_skip=$((total_skip + skip))
done
echo "logs: $log_dir/"
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
