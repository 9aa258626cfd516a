#!/usr/bin/env bash
# start.sh — N radixserve replicas on free loopback ports behind HAProxy on 127.0.0.1:PORT, in
# the foreground, with deploy/haproxy/haproxy.cfg as it is (only its server lines replaced).
#
# Usage: deploy/haproxy/start.sh N PORT MODEL_DIR [SERVE_ARGS...]
#   MODEL_DIR  a model directory or .gguf file; "-" (or "") is the repository's embedded
#              models/stories260K
#   SERVE_ARGS go to every replica's `radixserve serve` (after this script's own defaults, so
#              they override them: --max-connections-per-client 512, as every client is HAProxy)
# Prints `replica http://127.0.0.1:P` once per replica (stdout, in server order r1..rN) when
# every replica answers /health and HAProxy listens; then waits. SIGTERM or SIGINT stops
# HAProxy and every replica it started (SIGTERM, SIGKILL after 10 s) and exits 0; a replica that
# dies on its own is left to HAProxy's health checks; HAProxy dying ends everything with 1.
# (A non-interactive shell starts its background jobs with SIGINT ignored, and bash cannot trap
# a signal ignored at its start: stop such a job with SIGTERM. In a terminal, Ctrl-C works.)
#
# Environment:
#   RADIXSERVE_BIN       the binary (default: bin/radixserve of this repository)
#   RS_HAPROXY_BALANCE   prefix (default) | roundrobin (haproxy.cfg)
#   RS_DEPLOY_DIR        where the rendered haproxy.cfg and the logs go (replica-P.log,
#                        haproxy.log); default a temporary directory removed on exit
#   RS_START_TIMEOUT     seconds to wait for the replicas to load (default 300)
# Needs: haproxy (2.6 or later), curl, python3 (only its socket module, to find free ports).
# Failure: exit 2 on bad arguments, 1 if a replica or HAProxy cannot start (its log's tail is
# printed), having stopped whatever it had started.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
usage() { echo "usage: $0 N PORT MODEL_DIR [SERVE_ARGS...]" >&2; exit 2; }
[ $# -ge 3 ] || usage
n=$1 port=$2 model=$3
shift 3
case "$n" in '' | *[!0-9]*) usage ;; esac
case "$port" in '' | *[!0-9]*) usage ;; esac
[ "$n" -ge 1 ] || usage
[ -z "$model" ] || [ "$model" = - ] && model=$root/models/stories260K
bin=${RADIXSERVE_BIN:-$root/bin/radixserve}
[ -x "$bin" ] || { echo "start.sh: $bin is not built (make)" >&2; exit 1; }
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$haproxy" ] || { echo "start.sh: haproxy not found (apt-get install haproxy)" >&2; exit 1; }

dir=${RS_DEPLOY_DIR:-}
keep_dir=1
if [ -z "$dir" ]; then dir=$(mktemp -d "${TMPDIR:-/tmp}/radixserve-deploy.XXXXXX"); keep_dir=0; fi
mkdir -p "$dir"

pids=() ports=() hp=""
stop_all() {
    local p
    [ -n "$hp" ] && kill -TERM "$hp" 2>/dev/null
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 100); do
        local alive=0
        for p in "${pids[@]}" $hp; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}" $hp; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ $keep_dir = 1 ] || rm -rf "$dir"
}
# shellcheck disable=SC2317 # run by the trap below
on_signal() { trap - TERM INT; stop_all; exit 0; }
fail() {
    echo "start.sh: $1" >&2
    [ -f "${2:-}" ] && tail -5 "$2" | sed 's/^/start.sh:   /' >&2
    trap - TERM INT
    stop_all
    exit 1
}
trap on_signal TERM INT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
healthy() { [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health")" = 200 ]; }

for i in $(seq "$n"); do
    p=$(free_port)
    while [[ " ${ports[*]} " == *" $p "* ]]; do p=$(free_port); done # bind(0) may repeat one
    "$bin" serve --model "$model" --host 127.0.0.1 --port "$p" --max-connections-per-client 512 \
        "$@" >"$dir/replica-$p.log" 2>&1 &
    pids+=($!) ports+=("$p")
done

deadline=$(($(date +%s) + ${RS_START_TIMEOUT:-300}))
for i in "${!ports[@]}"; do
    p=${ports[$i]}
    until healthy "$p"; do
        kill -0 "${pids[$i]}" 2>/dev/null || fail "replica on port $p exited" "$dir/replica-$p.log"
        [ "$(date +%s)" -lt "$deadline" ] || fail "replica on port $p not healthy in time" "$dir/replica-$p.log"
        sleep 0.1
    done
done

# haproxy.cfg with its server lines replaced by the replicas (r1..rN, in start order).
servers=$(for i in "${!ports[@]}"; do printf '    server r%d 127.0.0.1:%s\n' $((i + 1)) "${ports[$i]}"; done)
awk -v servers="$servers" '
    /# BEGIN servers/ { print; print servers; skip = 1; next }
    /# END servers/ { skip = 0 }
    !skip' "$here/haproxy.cfg" >"$dir/haproxy.cfg"
export RS_HAPROXY_BIND=127.0.0.1:$port RS_HAPROXY_BALANCE=${RS_HAPROXY_BALANCE:-prefix}
"$haproxy" -c -q -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 || fail "haproxy.cfg does not load" "$dir/haproxy.log"
"$haproxy" -db -f "$dir/haproxy.cfg" >>"$dir/haproxy.log" 2>&1 &
hp=$!
until [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ]; do
    kill -0 "$hp" 2>/dev/null || fail "haproxy exited (port $port taken?)" "$dir/haproxy.log"
    [ "$(date +%s)" -lt "$deadline" ] || fail "haproxy not answering on $port" "$dir/haproxy.log"
    sleep 0.1
done

for p in "${ports[@]}"; do echo "replica http://127.0.0.1:$p"; done
echo "start.sh: HAProxy on http://127.0.0.1:$port ($RS_HAPROXY_BALANCE), logs in $dir" >&2

# Wait for HAProxy; a signal interrupts the wait and runs on_signal.
wait "$hp"
hp=""
fail "haproxy exited" "$dir/haproxy.log"
