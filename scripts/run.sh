#!/usr/bin/env bash
# make run: serve MODEL (default: the embedded stories260K) on HOST:PORT.
# Until the server room exists, it runs `generate` on the model and says so.
set -euo pipefail
bin=$1 model=$2 host=$3 port=$4
if "$bin" serve --help >/dev/null 2>&1; then
    exec "$bin" serve --model "$model" --host "$host" --port "$port"
fi
echo "run: the HTTP server is not built yet; running 'generate' on $model instead" >&2
exec "$bin" generate --model "$model" --prompt "Once upon a time" -n 64 --temperature 0
