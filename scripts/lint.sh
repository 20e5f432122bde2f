#!/usr/bin/env bash
# Contract and code checks, run by `make lint` (and by CI before the tests).
#
#   scripts/lint.sh                    every step: buf (lint + breaking), mypy, ruff
#   scripts/lint.sh buf mypy           only the steps named (buf, mypy, ruff)
#   scripts/lint.sh --update-baseline  record the current contract as the breaking-change baseline
#
# The buf step checks the contract against the baseline (protos/baseline/modelgateway_v1.image.json),
# and the baseline against every earlier committed version of itself (git log of that file), so a
# breaking change does not pass by refreshing the baseline in the same commit. Without that history
# (git missing, not a git repository, a shallow clone) it says so and checks the current baseline only.
#
# Environment:
#   BUF=/path/to/buf         the buf CLI to use instead of tools/node_modules/.bin/buf
#   ALLOW_BREAKING_CHANGE=1  accept a deliberate break: breaking changes of the baseline against its
#                            earlier versions are printed under a loud WARNING and do not fail the
#                            step. The earlier versions stay in git history, so every later run that
#                            should accept the same break needs the variable too.
#
# buf comes from npm (@bufbuild/buf, pinned in tools/package-lock.json; the binary ships inside
# the package): it is installed into tools/node_modules with `npm ci` when missing. Every step runs
# even when an earlier one fails; the exit code is non-zero when any failed, and the last line names
# the failed steps.
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

# buf breaking violations (--error-format json, one object a line) as "path: message [RULE]" lines.
# Images carry no source info, so there are no useful line numbers.
format_violations() {
    local py="$VENV_BIN/python"
    [[ -x "$py" ]] || py=python3
    "$py" -c '
import json
import sys

for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        v = json.loads(line)
    except ValueError:
        print("    " + line)
        continue
    print("    %s: %s [%s]" % (v.get("path") or "<image>", v.get("message", ""), v.get("type", "?")))
'
}

# The baseline must stay compatible with every version of it committed before: a field renumbered
# or retyped, then recorded with --update-baseline in the same commit, passes the check against the
# current baseline but not this one. Versions come from `git log -- $BASELINE` (the working-tree
# file against each distinct committed blob, newest first: one buf run per distinct version).
# Returns 0 when compatible, allowed (ALLOW_BREAKING_CHANGE=1) or not checkable (said so).
check_baseline_history() {
    local buf=$1 err shallow shas sha blob current_blob tmp n=0 broken=() out rc
    local fallback="checking against the current baseline only"
    if ! command -v git >/dev/null 2>&1; then
        say "baseline history: git not found: $fallback"
        return 0
    fi
    if ! err=$(git rev-parse --git-dir 2>&1 >/dev/null); then
        say "baseline history: not a git repository ($(head -n1 <<<"$err")): $fallback"
        return 0
    fi
    shallow=$(git rev-parse --is-shallow-repository 2>/dev/null)
    if [[ "$shallow" == true ]]; then
        say "baseline history: shallow clone, the earlier baselines are missing" \
            "(git fetch --unshallow to check them): $fallback"
        return 0
    fi
    if ! git rev-parse -q --verify HEAD >/dev/null 2>&1; then
        say "baseline history: no commits yet: $fallback"
        return 0
    fi
    if ! shas=$(git log --format=%H -- "$BASELINE" 2>&1); then
        say "baseline history: git log failed ($(head -n1 <<<"$shas")): $fallback"
        return 0
    fi
    if [[ -z "$shas" ]]; then
        say "baseline history: $BASELINE has no committed versions yet: nothing earlier to check"
        return 0
    fi
    current_blob=$(git hash-object -- "$BASELINE") || current_blob=""
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/mg-baselines.XXXXXX") || return 1
    local seen=" $current_blob "
    for sha in $shas; do
        # A commit that deleted the file has no version of it.
        blob=$(git rev-parse -q --verify "$sha:./$BASELINE" 2>/dev/null) || continue
        [[ "$seen" == *" $blob "* ]] && continue
        seen+="$blob "
        if ! git show "$sha:./$BASELINE" >"$tmp/$blob.json" 2>"$tmp/git.err"; then
            say "baseline history: cannot read $BASELINE at ${sha:0:12}" \
                "($(head -n1 "$tmp/git.err")): $fallback"
            rm -rf "$tmp"
            return 0
        fi
        n=$((n + 1))
        out=$("$buf" breaking "$BASELINE" --against "$tmp/$blob.json" --config buf.yaml \
            --error-format json 2>&1)
        rc=$?
        if [[ $rc -ne 0 ]]; then
            if [[ $rc -eq 100 ]]; then
                say "baseline history: breaking changes against the baseline of" \
                    "$(git log -1 --format='%h (%ad) "%s"' --date=short "$sha" | cut -c1-110):"
                format_violations <<<"$out"
            else
                say "baseline history: buf could not compare against the baseline of ${sha:0:12} (exit $rc):"
                printf '%s\n' "$out" | sed 's/^/    /'
            fi
            broken+=("${sha:0:12}")
        fi
    done
    rm -rf "$tmp"
    if [[ ${#broken[@]} -eq 0 ]]; then
        say "baseline history: compatible with the $n earlier committed version(s) that differ from it"
        return 0
    fi
    if [[ "${ALLOW_BREAKING_CHANGE:-}" == 1 ]]; then
        say "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        say "WARNING: ALLOW_BREAKING_CHANGE=1: accepting BREAKING CHANGES of the contract (above) against"
        say "WARNING: ${#broken[@]} earlier baseline(s): ${broken[*]}"
        say "WARNING: clients built against those versions will break (wire, JSON or generated code)."
        say "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        return 0
    fi
    if [[ -n "${ALLOW_BREAKING_CHANGE:-}" ]]; then
        say "ALLOW_BREAKING_CHANGE=${ALLOW_BREAKING_CHANGE} is ignored: only ALLOW_BREAKING_CHANGE=1 accepts a break"
    fi
    say "$BASELINE breaks ${#broken[@]} of its $n earlier committed version(s) (above): existing clients" \
        "would break, and refreshing the baseline does not accept that. Restore the changed fields" \
        "(numbers, types, names; add new fields instead), or, for a deliberate break, set ALLOW_BREAKING_CHANGE=1"
    return 1
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
            "new baseline, run scripts/lint.sh --update-baseline (and see ALLOW_BREAKING_CHANGE in --help)"
        rc=1
    else
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
    fi
    say "buf breaking: $BASELINE against its earlier committed versions"
    check_baseline_history "$buf" || rc=1
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
        "$buf" breaking --against "$BASELINE" ||
            say "the new baseline accepts the breaking changes above; make lint fails on them once it is" \
                "committed (it checks the baseline against its earlier versions) unless ALLOW_BREAKING_CHANGE=1"
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
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
