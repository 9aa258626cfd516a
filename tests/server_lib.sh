# server_lib.sh — what the server shell tests share (sourced by tests/test_server*.sh; not a test
# itself): the repo root as working directory, BIN, a scratch directory, TAP counting, a free
# port, reading a JSON field, and waiting for a started server to be ready.
#
# Usage: . "$(dirname "$0")/server_lib.sh" NAME   (NAME names the scratch directory)
ROOT=${RADIXSERVE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$ROOT" || exit 1
BIN=${BIN:-bin/radixserve}
TMP=${RADIXSERVE_TMP:-/tmp}/$1.$$
mkdir -p "$TMP"
PY=/usr/bin/python3 # Debian's Python (the one on PATH may be another)
n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# json EXPR: evaluate a Python expression over the JSON document on stdin (as d).
json() { $PY -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# metric_at URL NAME: the value of a /metrics sample (NAME with its labels, e.g. 'a{b="c"}').
metric_at() { curl -s -m 5 "$1/metrics" | awk -v k="$2" '$1==k {print $2}'; }
# wait_ready URL: until URL/health answers 200 (15 s at most; the checks that follow say if not).
wait_ready() { for _ in $(seq 150); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" = 200 ] && return 0; sleep 0.1; done; return 1; }
