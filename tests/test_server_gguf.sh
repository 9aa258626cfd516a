#!/usr/bin/env bash
# test_server_gguf.sh — `serve --model FILE.gguf`: the start-up line and /v1/models name the file
# format, and the server answers as the safetensors directory it was written from does (the same
# greedy completion and chat completion, the same /tokenize ids), stories260K and its GGUF
# (tests/gguf_write.py) served side by side.
set -u
. "$(dirname "$0")/server_lib.sh" test_server_gguf
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT

if [ ! -x "$BIN" ]; then echo "ok 1 - # SKIP $BIN not built"; exit 0; fi
$PY tests/gguf_write.py models/stories260K "$TMP/stories.gguf"
ok $? "gguf_write.py writes stories260K"
start() { # start MODEL LOG -> prints the URL
    local port
    port=$(free_port)
    "$BIN" serve --model "$1" --port "$port" --kv-cache-mb 16 --threads 1 >"$2" 2>&1 &
    PIDS+=($!)
    echo "http://127.0.0.1:$port"
}
UA=$(start models/stories260K "$TMP/a.log")
UB=$(start "$TMP/stories.gguf" "$TMP/b.log")
wait_ready "$UA"
wait_ready "$UB"

grep -q "ready: .*stories.gguf (llama, gguf, " "$TMP/b.log"
ok $? "the start-up line names the format: $(grep ready: "$TMP/b.log")"
grep -q "(llama, safetensors, " "$TMP/a.log"
ok $? "... and for safetensors: $(grep ready: "$TMP/a.log")"
fmt=$(curl -s "$UB/v1/models" | json 'd["data"][0].get("format")')
ok $([ "$fmt" = "gguf" ]; echo $?) "/v1/models says the format ($fmt)"
q=$(curl -s "$UB/v1/models" | json 'd["data"][0].get("quantization")')
ok $([ "$q" = "f32" ]; echo $?) "... and the weights (general.file_type 0: $q)"
# A GGUF's weight format is its general.file_type, not the embedding's type (llama-quantize keeps
# a Q4_0 or Q4_K_M file's tied embedding at Q6_K): the same F32 tensors labelled 15 (Q4_K_M).
$PY tests/gguf_write.py models/stories260K "$TMP/labelled.gguf" --file-type 15
UC=$(start "$TMP/labelled.gguf" "$TMP/c.log")
wait_ready "$UC"
q=$(curl -s "$UC/v1/models" | json 'd["data"][0].get("quantization")')
grep -q "weights q4_k_m)" "$TMP/c.log"
ok $([ $? = 0 ] && [ "$q" = "q4_k_m" ]; echo $?) "general.file_type 15 is reported as q4_k_m (/v1/models: $q; $(grep -o 'weights [a-z0-9_]*' "$TMP/c.log"))"

post() { curl -s -m 30 "$1$2" -H 'Content-Type: application/json' -d "$3" | json "$4"; }
for body in '{"prompt":"Once upon a time","max_tokens":48,"temperature":0}' \
    '{"prompt":"The little dog","max_tokens":32,"temperature":0,"logprobs":2}'; do
    a=$(post "$UA" /v1/completions "$body" 'json.dumps([d["choices"][0]["text"], d["choices"][0]["logprobs"], d["usage"]])')
    b=$(post "$UB" /v1/completions "$body" 'json.dumps([d["choices"][0]["text"], d["choices"][0]["logprobs"], d["usage"]])')
    ok $([ -n "$a" ] && [ "$a" = "$b" ]; echo $?) "completion $body: the same text, logprobs and usage ($(echo "$b" | head -c 100))"
done
chat='{"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":24,"temperature":0}'
a=$(post "$UA" /v1/chat/completions "$chat" 'd["choices"][0]["message"]["content"]')
b=$(post "$UB" /v1/chat/completions "$chat" 'd["choices"][0]["message"]["content"]')
ok $([ -n "$a" ] && [ "$a" = "$b" ]; echo $?) "chat completion: the same answer ($b)"
tk='{"prompt":"Lily saw a big, red ball."}'
a=$(post "$UA" /tokenize "$tk" 'd["tokens"]')
b=$(post "$UB" /tokenize "$tk" 'd["tokens"]')
ok $([ -n "$a" ] && [ "$a" = "$b" ]; echo $?) "/tokenize: the same ids ($b)"
echo "1..$n"
[ "$fails" -eq 0 ]
