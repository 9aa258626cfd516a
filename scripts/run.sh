#!/usr/bin/env bash
# make run: serve MODEL (default: the embedded models/stories260K) on HOST:PORT. The server
# prints the URL and a ready-to-paste curl command once the model is loaded.
set -euo pipefail
bin=$1 model=$2 host=$3 port=$4
exec "$bin" serve --model "$model" --host "$host" --port "$port"
