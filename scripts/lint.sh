#!/usr/bin/env bash
# Contract and code checks, run by `make lint` (and by CI before the tests).
#
#   scripts/lint.sh                    every step: buf (lint + breaking), mypy, ruff
#   scripts/lint.sh buf mypy           only the steps named (buf, mypy, ruff)
#   scripts/lint.sh --update-baseline  record the current contract as the breaking-change baseline
#
# buf comes from npm (@bufbuild/buf, pinned in tools/package-lock.json; the binary ships inside
# the package): it is installed into tools/node_modules with `npm ci` when missing. BUF=/path/to/buf
# overrides it. Every step runs even when an earlier one fails; the exit code is non-zero when any
# failed, and the last line names the failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."

BASELINE=protos/baseline/modelgateway_v1.image.json
VENV_BIN=.venv/bin

say() { printf 'lint: %s\n' "$*"; }

# The buf CLI: $BUF, else tools/node_modules (installed from the lockfile when missing or stale).
find_buf() {
    if [[ -n "${BUF:-}" ]]; then
        printf '%s\n' "$BUF"
        return 0
    fi
    if ! bash scripts/node_deps.sh tools >&2; then
        return 1
    fi
    if [[ -x tools/node_modules/.bin/buf ]]; then
        printf '%s\n' "tools/node_modules/.bin/buf"
        return 0
    fi
    say "buf is not installed and cannot be (needs npm: npm ci --prefix tools)" >&2
    return 1
}

# The contract as a JSON image: no source info (comments and positions do not change the baseline),
# pretty-printed so that a baseline update reads well in a diff.
build_image() {
    local buf=$1 out=$2 raw
    raw=$(mktemp "${TMPDIR:-/tmp}/mg-image.XXXXXX.json") || return 1
    if ! "$buf" build --exclude-source-info -o "$raw"; then
        rm -f "$raw"
        return 1
    fi
    local py="$VENV_BIN/python"
    [[ -x "$py" ]] || py=python3
    "$py" - "$raw" "$out" <<'EOF'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    image = json.load(f)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(image, f, indent=1)
    f.write("\n")
EOF
    local rc=$?
    rm -f "$raw"
    return $rc
}

step_buf() {
    local buf rc=0 current
    buf=$(find_buf) || return 1
    say "buf lint (STANDARD, buf.yaml)"
    "$buf" lint || rc=1
    if [[ ! -f "$BASELINE" ]]; then
        say "no baseline at $BASELINE: run scripts/lint.sh --update-baseline"
        return 1
    fi
    say "buf breaking against $BASELINE"
    if ! "$buf" breaking --against "$BASELINE"; then
        say "breaking changes (above): existing clients would break. Undo them, or, for a deliberate" \
            "new baseline, run scripts/lint.sh --update-baseline"
        return 1
    fi
    # The baseline is the contract's lockfile: compatible changes (new fields, RPCs) pass the check
    # above but must be recorded in the same change, so that the next edit is checked against them
    # too (a field added and then renumbered before a baseline update would pass unnoticed).
    current=$(mktemp "${TMPDIR:-/tmp}/mg-current.XXXXXX.json") || return 1
    if ! build_image "$buf" "$current"; then
        rc=1
    elif ! cmp -s "$current" "$BASELINE"; then
        say "the contract has compatible changes that $BASELINE does not record yet:" \
            "run scripts/lint.sh --update-baseline and commit the baseline with the .proto change"
        rc=1
    fi
    rm -f "$current"
    return $rc
}

step_mypy() {
    if [[ ! -x "$VENV_BIN/mypy" ]]; then
        say "$VENV_BIN/mypy not found: run make setup"
        return 1
    fi
    say "mypy (strict; files and options from pyproject.toml)"
    "$VENV_BIN/mypy"
}

step_ruff() {
    if [[ ! -x "$VENV_BIN/ruff" ]]; then
        say "$VENV_BIN/ruff not found: run make setup"
        return 1
    fi
    say "ruff check"
    "$VENV_BIN/ruff" check .
}

update_baseline() {
    local buf
    buf=$(find_buf) || exit 1
    # buf breaking works on any contract that compiles; lint findings are reported (make lint
    # fails on them) but do not stop the baseline update.
    "$buf" lint || say "warning: buf lint fails (above); make lint will fail until that is fixed"
    if [[ -f "$BASELINE" ]]; then
        say "buf breaking against the old baseline (informational: the update goes ahead)"
        "$buf" breaking --against "$BASELINE" || say "the new baseline accepts the breaking changes above"
    fi
    mkdir -p "$(dirname "$BASELINE")"
    build_image "$buf" "$BASELINE" || { say "FAILED: buf build"; exit 1; }
    say "wrote $BASELINE; review and commit it (git diff -- $BASELINE)"
}

steps=()
for arg in "$@"; do
    case "$arg" in
        --update-baseline) update_baseline; exit 0 ;;
        buf|mypy|ruff) steps+=("$arg") ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "unknown argument: $arg (expected buf, mypy, ruff or --update-baseline)"; exit 2 ;;
    esac
done
[[ ${#steps[@]} -eq 0 ]] && steps=(buf mypy ruff)

failed=()
for s in "${steps[@]}"; do
    "step_$s" || failed+=("$s")
done

if [[ ${#failed[@]} -gt 0 ]]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "OK: ${steps[*]}"
