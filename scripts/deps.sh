#!/usr/bin/env bash
# Install what the build (and, with --test, the test suite) needs and is missing.
# Idempotent and quick when everything is there: it checks for commands, headers and files,
# never for package names, and runs `apt-get update` at most once, only when it must install.
# An existing node/npm is left alone (this machine's Node does not come from Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0 want_fuzz=0
[ "${1:-}" = "--test" ] && want_test=1
[ "${1:-}" = "--fuzz" ] && want_fuzz=1

missing=()
need_file() { [ -e "$1" ] || missing+=("$2"); }
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }

need_cmd cc gcc
need_cmd make make
need_file /usr/include/microhttpd.h libmicrohttpd-dev
need_file /usr/include/cjson/cJSON.h libcjson-dev
need_file /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h libopenblas-pthread-dev
need_file /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so libopenblas-pthread-dev
need_file /usr/include/pcre2.h libpcre2-dev
need_file /usr/include/utf8proc.h libutf8proc-dev
if [ $want_test = 1 ]; then
    need_cmd curl curl
    need_file /usr/bin/python3 python3
    if [ -x /usr/bin/python3 ]; then
        /usr/bin/python3 -c 'import torch' 2>/dev/null || missing+=(python3-torch)
        /usr/bin/python3 -c 'import jinja2' 2>/dev/null || missing+=(python3-jinja2)
        /usr/bin/python3 -c 'import numpy' 2>/dev/null || missing+=(python3-numpy)
    else
        missing+=(python3-torch python3-jinja2 python3-numpy)
    fi
    need_file /usr/bin/chromium chromium # the web UI's browser test (tests/js/test_webui.mjs)
    need_file /usr/sbin/haproxy haproxy # deploy/haproxy/ and its test (tests/js/test_scaleout.mjs)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
fi

if [ $want_fuzz = 1 ]; then # make fuzz: clang and its libFuzzer runtime
    need_cmd clang clang
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 ||
        missing+=(libclang-rt-14-dev)
fi

if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2207
    pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
    echo "deps: installing ${pkgs[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# Test-side npm packages (openai SDK, transformers.js-derived tokenizer, chat-UI client,
# playwright-core to drive Chromium; it downloads no browser of its own), pinned
# by tests/js/package-lock.json. Reinstalled only when the lock file changed.
if [ $want_test = 1 ] && [ -f tests/js/package-lock.json ]; then
    stamp=tests/js/node_modules/.radixserve-lock
    if ! cmp -s tests/js/package-lock.json "$stamp" 2>/dev/null; then
        echo "deps: npm ci in tests/js"
        (cd tests/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        cp tests/js/package-lock.json "$stamp"
    fi
fi
exit 0
