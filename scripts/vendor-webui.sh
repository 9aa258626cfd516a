#!/usr/bin/env bash
# Refresh the web UI's third-party files in webui/vendor/ from the npm registry: marked (Markdown
# to HTML) and DOMPurify (HTML sanitising), their browser builds exactly as published, with their
# licences. The files are committed, so neither building nor running radixserve needs npm; run
# this only to move to other versions, then rebuild (the Makefile embeds webui/ into the binary)
# and run the browser test (tests/js/test_webui.mjs).
#
# Usage: scripts/vendor-webui.sh [MARKED_VERSION [DOMPURIFY_VERSION]]
#        (default: the versions pinned below; "latest" takes the newest published)
set -euo pipefail
cd "$(dirname "$0")/.."

marked=${1:-18.3.0}
dompurify=${2:-3.5.0}
out=webui/vendor

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "marked@$marked" "dompurify@$dompurify" >/dev/null)
for t in "$tmp"/*.tgz; do
    d=${t%.tgz}
    mkdir -p "$d"
    tar xzf "$t" -C "$d"
done
m=$(echo "$tmp"/marked-*/package)
p=$(echo "$tmp"/dompurify-*/package)
version() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$1/package.json"; }

mkdir -p "$out"
rm -f "$out"/*
cp "$m/lib/marked.umd.js" "$out/marked.umd.js"
cp "$m/LICENSE" "$out/LICENSE.marked.txt"
cp "$p/dist/purify.min.js" "$out/purify.min.js"
cp "$p/LICENSE" "$out/LICENSE.dompurify.txt"
[ -f "$p/LICENSE-MPL" ] && cp "$p/LICENSE-MPL" "$out/LICENSE-MPL.dompurify.txt"
{
    echo "# Vendored by scripts/vendor-webui.sh from the npm registry; do not edit these files."
    echo "marked $(version "$m") lib/marked.umd.js MIT"
    echo "dompurify $(version "$p") dist/purify.min.js (MPL-2.0 OR Apache-2.0)"
} >"$out/VERSIONS.txt"
echo "vendor-webui: $(tail -n +2 "$out/VERSIONS.txt" | cut -d' ' -f1,2 | paste -sd' ') in $out/"
