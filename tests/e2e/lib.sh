# TAP helpers for the end-to-end suites, sourced by tests/e2e/in-vm.
#
# scenario NAME FUNCTION: runs FUNCTION in a fresh bash with errexit (the files in
# $E2E_SOURCES sourced, the variables it needs exported) under a timeout of
# $E2E_TIMEOUT seconds (default 300: a hang fails the scenario, not the suite), prints
# `ok N - NAME (T s)` or `not ok N - NAME (T s)` followed by the tail of its output, and
# appends `NAME T` to $E2E_TIMES. A scenario fails on its first failing command.
# $E2E_ONLY, an extended regular expression, keeps only the scenarios whose name matches.
# $E2E_TAIL: how many lines of a failed scenario's output to show (default 25).

e2e_n=0
e2e_failed=0

scenario() {
    local name=$1 fn=$2 log start end rc secs src
    if [ -n "${E2E_ONLY:-}" ] && ! [[ $name =~ $E2E_ONLY ]]; then
        return 0
    fi
    e2e_n=$((e2e_n + 1))
    log=$(mktemp)
    start=$(date +%s%N)
    src=
    for f in $E2E_SOURCES; do src+=". '$f'; "; done
    timeout -k 10 "${E2E_TIMEOUT:-300}" bash -c "$src set -xeo pipefail; $fn" </dev/null >"$log" 2>&1
    rc=$?
    [ $rc -ne 124 ] || echo "timed out after ${E2E_TIMEOUT:-300} s" >>"$log"
    end=$(date +%s%N)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
    if [ $rc -eq 0 ]; then
        echo "ok $e2e_n - $name ($secs s)"
    else
        e2e_failed=$((e2e_failed + 1))
        echo "not ok $e2e_n - $name ($secs s)"
        tail -n ${E2E_TAIL:-25} "$log" | sed 's/^/#   /'
    fi
    echo "$name $secs" >>"$E2E_TIMES"
    rm -f "$log"
}

# expect ACTUAL EXPECTED: fails (with both shown) unless they are equal.
expect() {
    if [ "$1" != "$2" ]; then
        printf 'expected: %q\n     got: %q\n' "$2" "$1"
        return 1
    fi
}

# expect_in TEXT PART: fails unless TEXT contains PART.
expect_in() {
    case $1 in
    *"$2"*) ;;
    *) printf 'expected to contain: %q\n                 in: %q\n' "$2" "$1"; return 1 ;;
    esac
}

# status CMD...: prints CMD's exit status (never fails).
status() {
    "$@" >/dev/null 2>&1 && echo 0 || echo $?
}

# wait_until SECONDS CMD...: retries CMD every 0.2 s until it succeeds or time runs out.
wait_until() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for: $*"; return 1; }
        sleep 0.2
    done
}
