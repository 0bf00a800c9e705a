#!/usr/bin/env bash
# fsx against files inside a secfs GuardPoint: every mode (xts, cbc-cs1, gcm,
# clear), with and without the FUSE writeback cache, several seeds of 50,000
# operations each. Every run must end "All operations completed A-OK!".
#
#   sudo integration/fsx.sh
#
# Each configuration gets a fresh GuardPoint; its seeds run at the same time,
# each on its own file (which also exercises concurrent requests on one
# mount). The operation mix is in integration/fsx.toml.
#
# Environment:
#   SECFS      secfs binary (default: build target/release/secfs with cargo)
#   FSX        fsx binary (default: from PATH or ~/.cargo/bin)
#   MODES      modes to test (default: "xts cbc-cs1 gcm clear")
#   CACHES     "writeback nowriteback" or a subset (default: both)
#   SEEDS      seeds per configuration (default: "1 2 3")
#   OPS        operations per seed (default: 50000)
#   FSX_CONFIG fsx configuration (default: integration/fsx.toml)
#   KEEP_LOGS  directory to copy fsx outputs, artifacts and daemon logs to
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
config=${FSX_CONFIG:-"$here/fsx.toml"}
modes=${MODES:-"xts cbc-cs1 gcm clear"}
caches=${CACHES:-"writeback nowriteback"}
seeds=${SEEDS:-"1 2 3"}
ops=${OPS:-50000}

die() {
    echo "fsx.sh: $*" >&2
    exit 2
}

[ "$(id -u)" -eq 0 ] || die "must run as root (secfs mounts)"

if [ -z "${SECFS:-}" ]; then
    cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p guardfs-shim
    SECFS="$repo/target/release/secfs"
fi
[ -x "$SECFS" ] || die "secfs binary not found: $SECFS"
FSX=${FSX:-$(command -v fsx || echo "$HOME/.cargo/bin/fsx")}
[ -x "$FSX" ] || die "fsx not found (cargo install fsx)"

work=$(mktemp -d "${TMPDIR:-/tmp}/guardfs-fsx.XXXXXX")
mounted=()
daemons=()

cleanup() {
    local m p
    cd /
    for p in $(jobs -p); do
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    for m in "${mounted[@]}"; do
        "$SECFS" umount "$m" --lazy >/dev/null 2>&1 || true
    done
    for p in "${daemons[@]}"; do
        # Only a daemon of this run that outlived its unmount.
        if grep -qa secfs "/proc/$p/cmdline" 2>/dev/null; then
            kill "$p" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$SECFS" genkey "$work/key" >/dev/null

# wait_gone, unmount
source "$here/lib.sh"

# One seed: fsx on its own file; its output and exit status go to files.
run_seed() {
    local gp=$1 dir=$2 seed=$3 start=$SECONDS rc=0
    mkdir -p "$dir"
    "$FSX" -f "$config" -N "$ops" -S "$seed" -P "$dir" "$gp/fsx-$seed" >"$dir/out" 2>&1 || rc=$?
    echo "$rc $((SECONDS - start))" >"$dir/status"
}

failed=0
results=()

run_config() {
    local mode=$1 cache=$2
    local name="$mode-$cache" opts=() out pid seed
    local gp="$work/gp-$name" log="$work/secfs-$name.log"
    [ "$cache" = nowriteback ] && opts+=(--no-writeback-cache)
    mkdir "$gp"
    out=$("$SECFS" mount "$gp" --key-file "$work/key" --mode "$mode" "${opts[@]}" --log-file "$log")
    mounted+=("$gp")
    pid=$(sed -nE 's/.*daemon pid ([0-9]+).*/\1/p' <<<"$out")
    [ -n "$pid" ] || die "cannot find the daemon pid in: $out"
    daemons+=("$pid")

    local start=$SECONDS
    for seed in $seeds; do
        run_seed "$gp" "$work/$name/seed-$seed" "$seed" &
    done
    wait
    local secs=$((SECONDS - start))
    local alive=1
    kill -0 "$pid" 2>/dev/null || alive=0
    unmount "$gp" "$pid" || alive=0

    for seed in $seeds; do
        local dir="$work/$name/seed-$seed" rc t line
        read -r rc t <"$dir/status"
        if [ "$rc" -eq 0 ] && grep -q 'All operations completed A-OK!' "$dir/out"; then
            line=$(printf 'fsx %-8s %-12s seed=%s ops=%s  A-OK (%ds)' "$mode" "$cache" "$seed" "$ops" "$t")
            echo "$line"
        else
            line=$(printf 'fsx %-8s %-12s seed=%s ops=%s  FAILED (exit %s, %ds)' "$mode" "$cache" "$seed" "$ops" "$rc" "$t")
            echo "$line"
            failed=$((failed + 1))
            tail -n 40 "$dir/out" | sed 's/^/    /'
        fi
        results+=("$line")
    done
    if [ "$alive" -eq 0 ] || grep -q 'panicked' "$log" 2>/dev/null; then
        echo "fsx $mode $cache: the secfs daemon died or panicked"
        failed=$((failed + 1))
        results+=("fsx $mode $cache: secfs daemon died or panicked")
        tail -n 20 "$log" | sed 's/^/    /'
    fi
    echo "fsx $mode $cache: ${secs}s for seeds $seeds"
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS"
        cp -r "$work/$name" "$KEEP_LOGS/fsx-$name"
        cp "$log" "$KEEP_LOGS/" 2>/dev/null || true
    fi
}

total_start=$SECONDS
for mode in $modes; do
    for cache in $caches; do
        run_config "$mode" "$cache"
    done
done

echo
echo "fsx summary ($ops operations per seed, $((SECONDS - total_start))s in all):"
printf '  %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
    echo "fsx.sh: $failed run(s) failed" >&2
    exit 1
fi
echo "fsx.sh: all runs A-OK"
