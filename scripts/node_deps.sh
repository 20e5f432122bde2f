#!/usr/bin/env bash
# npm dependencies from the committed lockfiles (`make node-deps`; `make test` and lint use it):
#   tools/          the buf CLI (@bufbuild/buf), for buf lint / buf breaking
#   examples/node/  @grpc/grpc-js and @grpc/proto-loader, for the Node.js example client
#
#   scripts/node_deps.sh                 both
#   scripts/node_deps.sh tools           only the ones named
#
# Idempotent and fast: a directory whose node_modules was installed from the same package.json
# and package-lock.json (a stamp holds their checksum) is not installed again. Prints one line per
# directory. Where npm is absent it prints "skipped: npm not found" and exits 0 (tests that need
# these packages then skip, saying so); a failed install exits non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."

dirs=("$@")
[[ ${#dirs[@]} -eq 0 ]] && dirs=(tools examples/node)

if ! command -v npm >/dev/null 2>&1; then
    echo "node-deps: skipped: npm not found (install Node.js >= 18 with npm for buf and the Node example)"
    exit 0
fi

rc=0
for dir in "${dirs[@]}"; do
    if [[ ! -f "$dir/package.json" || ! -f "$dir/package-lock.json" ]]; then
        echo "node-deps: $dir: no package.json + package-lock.json"
        rc=1
        continue
    fi
    stamp="$dir/node_modules/.model-gateway-stamp"
    sum=$(cat "$dir/package.json" "$dir/package-lock.json" | cksum)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
        echo "node-deps: $dir: up to date"
        continue
    fi
    # --ignore-scripts: nothing is fetched or built at install time (buf's binary comes in its
    # per-platform package, selected by the lockfile's os/cpu fields).
    log=$(mktemp "${TMPDIR:-/tmp}/node-deps.XXXXXX")
    if npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund --loglevel=error >"$log" 2>&1; then
        printf '%s\n' "$sum" >"$stamp"
        echo "node-deps: $dir: installed (npm ci)"
    else
        cat "$log" >&2
        echo "node-deps: $dir: npm ci FAILED"
        rc=1
    fi
    rm -f "$log"
done
exit $rc
