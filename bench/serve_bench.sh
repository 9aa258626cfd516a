#!/usr/bin/env bash
# serve_bench.sh — issue 15's serving benchmark: radixserve (prefix cache on, then off) against
# llama.cpp's llama-server on the same weights, driven by bench/loadgen.mjs. A benchmark, not a
# test: run it on a quiet machine (no builds, no other servers).
#
# Usage: bench/serve_bench.sh [--quick] [--only radixserve|llama] [--workloads LIST]
#                             [--model DIR] [--bin PATH] [--out FILE]
#   --quick      smoke run: a tiny random Qwen3 (build/bench/tiny-qwen3), 4 requests of 8 tokens
#   --only       run one server family (radixserve = cache on and off, concurrency 1/4/16)
#   --workloads  comma-separated subset of few-shot,multi-turn,unique (default: all three)
#   --model      Hugging Face model dir (default build/bench/qwen3-0.6b: BF16, Qwen3-0.6B's
#                shapes, written by bench/model.sh when absent)
#   --bin        the radixserve binary (default $BIN, else bin/radixserve)
#   --out        JSON lines are appended here (default build/bench/serve-results.jsonl)
#   --concurrency LIST  radixserve's (cache on) concurrencies, comma-separated (default 16,4,1)
#   --think-ms T  multi-turn sessions wait T ms between an answer and their next turn (loadgen's
#                --think-ms; default 0); the table then also gives TTFT p50 of turns >= 2
#   --rs-flags "FLAGS"  extra flags for every radixserve server, e.g. "--warm-next-turn 0" to
#                measure without next-turn warming (recorded as rs_flags in the JSON lines)
# Warming on vs off at c=16 with think time (issue 21), two runs:
#   bench/serve_bench.sh --workloads multi-turn --concurrency 16 --think-ms 2000
#   bench/serve_bench.sh --workloads multi-turn --concurrency 16 --think-ms 2000 --only radixserve \
#       --rs-flags "--warm-next-turn 0"
# Environment:
#   LLAMA_SERVER   llama-server binary (default /tmp/llama.cpp/build/bin/llama-server; absent:
#                  the peer is skipped with a message)
#   LLAMA_SRC      llama.cpp source tree whose gguf-py converts the model (default /tmp/llama.cpp)
#   PEERS_TOOLS    where hf_to_gguf.py is (default /work/shared/peers)
#   GGUF           an already converted GGUF of --model (skips the conversion)
#   LOAD_TIMEOUT   seconds a server may take to become healthy (default 600)
#   RUN_TIMEOUT    seconds one loadgen run may take (default 3600; --quick: 180)
#
# Every measurement starts a fresh server (so no run inherits another's cache) with the default
# flags, on a free loopback port, and stops it afterwards; a trap stops any server still running
# on exit or interrupt. radixserve runs every workload at concurrency 16 with the cache on and
# off, and with the cache on at concurrency 1 and 4; llama-server runs every workload at 16 with
# `-t 2 --parallel 16 -c 32768`. The table at the end gives the ratios; exit status 1 if any
# run failed (the others still run and are reported).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
PY=/usr/bin/python3 # Debian's, with numpy (hf_to_gguf.py)

quick=0 only='' workloads=few-shot,multi-turn,unique concurrency=16,4,1 model='' bin=${BIN:-bin/radixserve}
think_ms=0 rs_flags=''
out=build/bench/serve-results.jsonl
usage() {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --only) only=${2:-}; shift ;;
        --workloads) workloads=${2:-}; shift ;;
        --concurrency) concurrency=${2:-}; shift ;;
        --model) model=${2:-}; shift ;;
        --bin) bin=${2:-}; shift ;;
        --out) out=${2:-}; shift ;;
        --think-ms) think_ms=${2:-}; shift ;;
        --rs-flags) rs_flags=${2:-}; shift ;;
        -h | --help) usage ;;
        *) echo "serve_bench.sh: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
case $only in "" | radixserve | llama) ;; *) echo "serve_bench.sh: --only radixserve|llama" >&2; exit 2 ;; esac
for w in ${workloads//,/ }; do
    case $w in few-shot | multi-turn | unique) ;; *) echo "serve_bench.sh: unknown workload '$w'" >&2; exit 2 ;; esac
done

if [ $quick = 1 ]; then
    model=${model:-build/bench/tiny-qwen3} requests=4 max_tokens=8 run_timeout=${RUN_TIMEOUT:-180}
else
    model=${model:-build/bench/qwen3-0.6b} requests=16 max_tokens=32 run_timeout=${RUN_TIMEOUT:-3600}
fi
load_timeout=${LOAD_TIMEOUT:-600}
llama_server=${LLAMA_SERVER:-/tmp/llama.cpp/build/bin/llama-server}
llama_src=${LLAMA_SRC:-/tmp/llama.cpp}
peers_tools=${PEERS_TOOLS:-/work/shared/peers}
die() { echo "serve_bench.sh: $*" >&2; exit 1; }
command -v node >/dev/null || die "node not found (loadgen.mjs needs Node 18+)"
command -v curl >/dev/null || die "curl not found"
work=build/bench/serve-$$
mkdir -p "$work" "$(dirname "$out")" || exit 1
run_log=$work/results.jsonl # this run's lines, for the table
: >"$run_log"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git status --porcelain 2>/dev/null | grep -qv '^??' && commit=$commit-dirty


# ---------------------------------------------------------------- servers

SERVER_PID='' SERVER_URL='' SERVER_LOG=''
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}
LOADGEN_PID=
cleanup() {
    [ -n "$LOADGEN_PID" ] && kill -TERM "$LOADGEN_PID" 2>/dev/null
    stop_server
    rm -rf "$work"
}
# On a signal: stop what was started, then die of the same signal, so a caller (bench/run.sh,
# make) sees an interrupt rather than a failed step and stops too.
interrupted() {
    echo "serve_bench.sh: interrupted" >&2
    cleanup
    trap - EXIT "$1"
    kill -"$1" $$
}
trap cleanup EXIT
trap 'interrupted INT' INT
trap 'interrupted TERM' TERM

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Wait until GET $SERVER_URL/health answers 200 (both servers answer 503 while loading).
wait_healthy() { # name
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt "$load_timeout" ]; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "serve_bench.sh: $1 exited while starting; its log:" >&2
            tail -20 "$SERVER_LOG" >&2
            SERVER_PID=
            return 1
        fi
        if [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$SERVER_URL/health")" = 200 ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "serve_bench.sh: $1 not healthy after ${load_timeout}s; its log:" >&2
    tail -20 "$SERVER_LOG" >&2
    stop_server
    return 1
}

# Start one server (radixserve | radixserve-nocache | llama) on a free port with its default flags.
start_server() {
    local port
    port=$(free_port) || return 1
    SERVER_LOG=$work/server.log SERVER_URL=http://127.0.0.1:$port
    local cmd=("$bin" serve --model "$model" --host 127.0.0.1 --port "$port")
    # shellcheck disable=SC2206 # word-split on purpose: the flags as given
    cmd+=($rs_flags)
    case $1 in
        radixserve-nocache) cmd+=(--no-prefix-cache) ;;
        llama) cmd=("$llama_server" -m "$gguf" -t 2 --parallel 16 -c 32768 --host 127.0.0.1 --port "$port") ;;
    esac
    "${cmd[@]}" >"$SERVER_LOG" 2>&1 & # the server itself, so SERVER_PID is its pid
    SERVER_PID=$!
    wait_healthy "$1"
}

# ---------------------------------------------------------------- one measurement

failures=0
# Start a server, run one workload at one concurrency, stop it; the loadgen's JSON line gains
# the server's name, cache setting, model, commit and time, and goes to $out and $run_log.
measure() { # server(radixserve|radixserve-nocache|llama) workload concurrency
    local server=$1 w=$2 c=$3 res
    echo "== $server $w concurrency $c"
    start_server "$server" || { failures=$((failures + 1)); return 1; }
    # In the background and waited for, so a signal reaches the trap at once.
    timeout -k 10 "$run_timeout" node bench/loadgen.mjs --url "$SERVER_URL" --workload "$w" \
        --concurrency "$c" --requests "$requests" --max-tokens "$max_tokens" \
        --timeout "$run_timeout" --think-ms "$think_ms" --label "$server" --json >"$work/loadgen.out" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID"
    local rc=$?
    LOADGEN_PID=
    stop_server
    res=$(cat "$work/loadgen.out")
    echo "$res" | grep -v '^{'
    local line
    line=$(echo "$res" | grep '^{' | tail -1)
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        echo "serve_bench.sh: loadgen failed for $server $w c=$c (status $rc; 124 = timed out after ${run_timeout}s); server log tail:" >&2
        tail -5 "$SERVER_LOG" >&2
        failures=$((failures + 1))
        return 1
    fi
    line=$(node -e '
        const [line, server, model, commit, quick, rsFlags] = process.argv.slice(1);
        const j = JSON.parse(line);
        const out = { bench: "serve", time: new Date().toISOString().replace(/\.\d+Z$/, "Z"), commit,
            server: server.startsWith("radixserve") ? "radixserve" : "llama-server",
            prefix_cache: server === "radixserve" ? "on" : server === "llama" ? "n/a" : "off",
            rs_flags: server.startsWith("radixserve") ? rsFlags : "",
            model, quick: quick === "1", ...j };
        delete out.label;
        // With ignore_eos every request yields max_tokens; fewer means errors the stream carried
        // (an SSE error event has no choices) or ignore_eos not honoured: not a valid figure.
        const expected = j.requests * j.max_tokens;
        out.complete = j.output_tokens === expected;
        console.log(JSON.stringify(out));
        if (!out.complete)
            console.error(`serve_bench.sh: ${server} ${j.workload} c=${j.concurrency}: ` +
                `${j.output_tokens} output tokens, expected ${expected} (${j.requests} requests x ` +
                `${j.max_tokens}): some requests failed or stopped early; run marked incomplete`);
    ' "$line" "$server" "$model" "$commit" "$quick" "$rs_flags") || return 1
    echo "$line" >>"$out"
    case $line in *'"complete":false'*) failures=$((failures + 1)) ;; *) echo "$line" >>"$run_log" ;; esac
}

# ---------------------------------------------------------------- models

ensure_model() {
    local preset
    [ -f "$model/config.json" ] && return 0
    case $model in
        build/bench/qwen3-0.6b) preset=qwen3-0.6b ;;
        build/bench/tiny-qwen3) preset=tiny-qwen3 ;;
        *) die "$model has no config.json (a Hugging Face model directory?)" ;;
    esac
    bash bench/model.sh "$model" "$preset" || die "bench/model.sh could not write $model"
}

# The peer needs its binary, the conversion script and gguf-py; any missing piece skips it.
gguf=
prepare_llama() {
    if [ ! -x "$llama_server" ]; then
        echo "== llama-server: skipped ($llama_server not found; build it as ../shared/peers/README.md says, or set LLAMA_SERVER)"
        return 1
    fi
    if [ -n "${GGUF:-}" ]; then
        [ -f "$GGUF" ] || { echo "== llama-server: skipped (GGUF=$GGUF not found)"; return 1; }
        gguf=$GGUF
        return 0
    fi
    gguf=build/bench/$(basename "$model").gguf
    [ -f "$gguf" ] && [ "$gguf" -nt "$model/config.json" ] && return 0
    if [ ! -f "$peers_tools/hf_to_gguf.py" ] || [ ! -d "$llama_src/gguf-py" ]; then
        echo "== llama-server: skipped (needs $peers_tools/hf_to_gguf.py and $llama_src/gguf-py to convert $model; set PEERS_TOOLS / LLAMA_SRC, or GGUF)"
        return 1
    fi
    echo "== converting $model to $gguf"
    $PY "$peers_tools/hf_to_gguf.py" "$model" "$gguf.tmp" "$llama_src" && mv "$gguf.tmp" "$gguf" && return 0
    echo "== llama-server: skipped (conversion failed)"
    rm -f "$gguf.tmp"
    return 1
}

# ---------------------------------------------------------------- the runs

ensure_model
if [ "$only" != llama ]; then
    [ -x "$bin" ] || die "$bin not built (make, or --bin PATH)"
    for w in ${workloads//,/ }; do
        for c in ${concurrency//,/ }; do measure radixserve "$w" "$c"; done
        measure radixserve-nocache "$w" 16
    done
fi
if [ "$only" != radixserve ] && prepare_llama; then
    for w in ${workloads//,/ }; do measure llama "$w" 16; done
fi

# ---------------------------------------------------------------- the table

echo
echo "serve_bench: $model, commit $commit, $(nproc) cores$([ $quick = 1 ] && echo ', QUICK (smoke only)'), think ${think_ms} ms, radixserve flags '${rs_flags}'"
node -e '
    const fs = require("fs");
    const rows = fs.readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean).map(JSON.parse);
    const get = (w, c, srv, cache) => rows.find((r) => r.workload === w && r.concurrency === c &&
        r.server === srv && r.prefix_cache === cache);
    const f = (x, d = 2, unit = "") =>
        (x === undefined || x === null || Number.isNaN(x) ? "-" : (+x).toFixed(d) + unit);
    const ratio = (a, b) => (a && b ? a / b : undefined);
    console.log("| workload | c | radixserve tok/s | TTFT p50 s | TTFT p50 turns>=2 s | ITL p50 ms | " +
        "ITL p99 ms | cache off tok/s | cache gain | llama tok/s | llama TTFT p50 s | " +
        "llama TTFT p50 turns>=2 s | tok/s ratio rs/llama | TTFT ratio rs/llama |");
    console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    const keys = [...new Set(rows.map((r) => r.workload + "|" + r.concurrency))];
    for (const k of keys) {
        const [w, cs] = k.split("|"), c = +cs;
        const on = get(w, c, "radixserve", "on"), off = get(w, c, "radixserve", "off");
        const ll = get(w, c, "llama-server", "n/a");
        console.log(`| ${w} | ${c} | ${f(on?.output_tok_s)} | ${f(on?.ttft_p50_s, 3)} | ` +
            `${f(on?.ttft_later_p50_s, 3)} | ${f(on?.itl_p50_ms, 1)} | ${f(on?.itl_p99_ms, 1)} | ` +
            `${f(off?.output_tok_s)} | ` +
            `${f(ratio(on?.output_tok_s, off?.output_tok_s), 2, "x")} | ${f(ll?.output_tok_s)} | ` +
            `${f(ll?.ttft_p50_s, 3)} | ${f(ll?.ttft_later_p50_s, 3)} | ` +
            `${f(ratio(on?.output_tok_s, ll?.output_tok_s))} | ` +
            `${f(ratio(on?.ttft_p50_s, ll?.ttft_p50_s), 3)} |`);
    }' "$run_log"
echo
echo "goals (issue 15, concurrency 16): few-shot tok/s ratio >= 10 and TTFT ratio <= 0.05; multi-turn >= 1; unique >= 0.9"
echo "JSON lines appended to $out"
if [ ! -s "$run_log" ]; then
    echo "serve_bench.sh: nothing was measured" >&2
    exit 1
fi
if [ $failures -gt 0 ]; then
    echo "serve_bench.sh: $failures run(s) failed (see above)" >&2
    exit 1
fi
