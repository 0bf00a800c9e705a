#!/usr/bin/env bash
# pjdfstest against a mounted secfs GuardPoint, in every mode (xts, cbc-cs1,
# gcm, clear), with and without the FUSE writeback cache. Each run gets a
# fresh GuardPoint; any failing test fails the script.
#
#   sudo integration/pjdfstest.sh
#
# Environment:
#   SECFS       secfs binary (default: build target/debug/secfs with cargo)
#   PJDFSTEST   pjdfstest binary (default: from PATH or ~/.cargo/bin)
#   MODES       modes to test (default: "xts cbc-cs1 gcm clear")
#   CACHES      "writeback nowriteback" or a subset (default: both)
#   KEEP_LOGS   directory to copy the pjdfstest outputs and daemon logs to
#
# The configuration, and the reason for every test that stays skipped, is
# in integration/pjdfstest.toml: a test may be skipped only if that file has
# a line
#   # skip-allowed: TEST — REASON
# naming it exactly (e.g. link::link_count_max). Any other skip fails the
# configuration it happened in, so a new skip cannot go unnoticed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
config="$here/pjdfstest.toml"
modes=${MODES:-"xts cbc-cs1 gcm clear"}
caches=${CACHES:-"writeback nowriteback"}

die() {
    echo "pjdfstest.sh: $*" >&2
    exit 2
}

[ "$(id -u)" -eq 0 ] || die "must run as root (secfs mounts, pjdfstest switches users)"

if [ -z "${SECFS:-}" ]; then
    cargo build --quiet --manifest-path "$repo/Cargo.toml" -p guardfs-shim
    SECFS="$repo/target/debug/secfs"
fi
[ -x "$SECFS" ] || die "secfs binary not found: $SECFS"
PJDFSTEST=${PJDFSTEST:-$(command -v pjdfstest || echo "$HOME/.cargo/bin/pjdfstest")}
[ -x "$PJDFSTEST" ] || die "pjdfstest not found (cargo install pjdfstest)"

# The users and groups of [dummy_auth] in pjdfstest.toml. Each user's
# primary group must be the group it is paired with.
ensure_user() {
    local user=$1 group=$2
    getent group "$group" >/dev/null || groupadd "$group"
    if ! getent passwd "$user" >/dev/null; then
        useradd -g "$group" -M -d / -s /usr/sbin/nologin -c "pjdfstest dummy user" "$user"
    fi
    [ "$(id -gn "$user")" = "$group" ] ||
        die "user $user exists but its primary group is $(id -gn "$user"), not $group"
}
ensure_user nobody nogroup
ensure_user tests tests

# Short paths: some tests bind Unix sockets deep below the GuardPoint, and
# a socket path must fit in sun_path (108 bytes).
work=$(mktemp -d /tmp/pjd.XXXXXX)
# The permission tests reach the GuardPoint as unprivileged users.
chmod 0755 "$work"
mounted=()
daemons=()

cleanup() {
    local m p
    cd /
    for m in "${mounted[@]}"; do
        "$SECFS" umount "$m" --lazy >/dev/null 2>&1 || true
    done
    for p in "${daemons[@]}"; do
        # Only a daemon of this run that outlived its unmount.
        if grep -qa secfs "/proc/$p/cmdline" 2>/dev/null; then
            kill "$p" 2>/dev/null || true
        fi
    done
    if mountpoint -q "$work/secondary"; then
        umount -l "$work/secondary" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A second, distinct file system for the EXDEV tests of link and rename.
mkdir "$work/secondary"
mount -t tmpfs -o size=16m,mode=0755 guardfs-pjdfstest-secondary "$work/secondary"

"$SECFS" genkey "$work/key" >/dev/null

# The EROFS tests remount the GuardPoint with `mount -o remount,ro DIR`.
# secfs mounts with mount(2) itself and installs no mount helper; with the
# fuse package installed, mount(8) hands a fuse.secfs remount to
# /sbin/mount.fuse, which tries to start a program named after the subtype
# (`secfs`) with helper arguments and fails. `mount -i` (no helpers) makes
# the remount a plain mount(2) call, which FUSE handles in the kernel.
mkdir "$work/bin"
printf '#!/bin/sh\nexec %s -i "$@"\n' "$(command -v mount)" >"$work/bin/mount"
chmod 0755 "$work/bin/mount"

# The main pass runs without remounts; the EROFS tests get a pass of their
# own (see allow_remount in pjdfstest.toml).
sed 's/^allow_remount = true$/allow_remount = false/' "$config" >"$work/main.toml"
grep -q '^allow_remount = false$' "$work/main.toml" ||
    die "pjdfstest.toml must contain the line 'allow_remount = true'"

# The skips pjdfstest.toml allows: test name -> reason.
declare -A skip_allowed=()
allow_re='^#[[:space:]]*skip-allowed:[[:space:]]*([^[:space:]]+)[[:space:]]+(—|--|-)[[:space:]]+([^[:space:]].*)$'
while IFS= read -r line; do
    if [[ $line =~ $allow_re ]]; then
        skip_allowed[${BASH_REMATCH[1]}]=${BASH_REMATCH[3]}
    elif [[ $line =~ ^#[[:space:]]*skip-allowed ]]; then
        die "malformed line in $config (want '# skip-allowed: TEST — REASON'): $line"
    fi
done <"$config"
# Tests skipped in some configuration of this run.
declare -A skipped_anywhere=()

strip_colors() { sed -E 's/\x1b\[[0-9;]*m//g'; }

# The skips in a pjdfstest output, one "TEST<TAB>REASON" line each.
# pjdfstest prints a skipped test as "TEST ... skipped" followed by its
# reason on lines starting with a tab.
skips_of() {
    awk 'function out() { if (name != "") print name "\t" reason; name = ""; reason = "" }
         / skipped$/ { out(); name = $1; next }
         name != "" && /^\t/ { sub(/^\t/, ""); reason = reason (reason == "" ? "" : " ") $0; next }
         { out() }
         END { out() }' "$1"
}

# "Summary: F failed, S skipped, P passed, E expected failures, T total"
# -> "F S P E T"
summary_of() {
    sed -nE 's/^Summary: ([0-9]+) failed, ([0-9]+) skipped, ([0-9]+) passed, ([0-9]+) expected failures, ([0-9]+) total.*/\1 \2 \3 \4 \5/p' "$1"
}

# wait_gone, unmount
source "$here/lib.sh"

total_failed=0
run_no=0
results=()

run_one() {
    local mode=$1 cache=$2
    local name="$mode-$cache"
    run_no=$((run_no + 1))
    local gp="$work/g$run_no" log="$work/secfs-$name.log"
    local main_out="$work/pjdfstest-$name.out" erofs_out="$work/pjdfstest-$name-erofs.out"
    local opts=() out pid

    # pjdfstest's PATH_MAX helper (the enametoolong_path tests) underflows
    # when its base path (this path plus two 11-byte temp dirs) is 31 bytes
    # long modulo 127, e.g. for a 9-byte path like /tmp/x/gp.
    [ $(((${#gp} + 22) % 127)) -ne 31 ] || die "$gp: length trips a pjdfstest bug; use another path"
    [ "$cache" = nowriteback ] && opts+=(--no-writeback-cache)
    mkdir "$gp"
    out=$("$SECFS" mount "$gp" --key-file "$work/key" --mode "$mode" "${opts[@]}" --log-file "$log")
    mounted+=("$gp")
    pid=$(sed -nE 's/.*daemon pid ([0-9]+).*/\1/p' <<<"$out")
    [ -n "$pid" ] || die "cannot find the daemon pid in: $out"
    daemons+=("$pid")

    local start=$SECONDS
    (cd "$gp" && PATH="$work/bin:$PATH" NO_COLOR=1 "$PJDFSTEST" -c "$work/main.toml" -p "$gp" -s "$work/secondary") 2>&1 |
        strip_colors >"$main_out" || true
    (cd "$gp" && PATH="$work/bin:$PATH" NO_COLOR=1 "$PJDFSTEST" -c "$config" -p "$gp" -s "$work/secondary" erofs) 2>&1 |
        strip_colors >"$erofs_out" || true
    local secs=$((SECONDS - start))

    # What pjdfstest left behind must be gone, and the daemon still alive.
    local leftovers
    leftovers=$(find "$gp" -mindepth 1 | head -5)
    kill -0 "$pid" 2>/dev/null || echo "pjdfstest.sh: $name: secfs daemon died" >"$work/died-$name"
    local exited=1
    unmount "$gp" "$pid" || exited=0

    local m e
    read -r -a m <<<"$(summary_of "$main_out")"
    read -r -a e <<<"$(summary_of "$erofs_out")"
    local ok=1 why=()
    if [ "${#m[@]}" -ne 5 ] || [ "${#e[@]}" -ne 5 ]; then
        ok=0
        why+=("pjdfstest did not finish (no summary line)")
        m=(0 0 0 0 0) e=(0 0 0 0 0)
    fi
    # The main pass skipped exactly the tests the EROFS pass ran.
    local remount_skips
    remount_skips=$(grep -c 'Remounts (allow_remount) are not allowed' "$main_out" || true)
    if [ "$remount_skips" -ne "${e[4]}" ]; then
        ok=0
        why+=("main pass skipped $remount_skips EROFS tests, EROFS pass ran ${e[4]}")
    fi
    # Every skip must be allowed in pjdfstest.toml. (The EROFS tests of the
    # main pass ran in the EROFS pass.)
    local skips=() undocumented=() sname sreason
    while IFS=$'\t' read -r sname sreason; do
        [ -n "$sname" ] || continue
        skipped_anywhere[$sname]=1
        if [ -n "${skip_allowed[$sname]+set}" ]; then
            skips+=("skipped $sname: $sreason (allowed: ${skip_allowed[$sname]})")
        else
            skips+=("skipped $sname: $sreason (NOT ALLOWED)")
            undocumented+=("$sname")
        fi
    done < <(
        skips_of "$main_out" | grep -v $'\tRemounts (allow_remount) are not allowed' || true
        skips_of "$erofs_out"
    )
    if [ "${#undocumented[@]}" -ne 0 ]; then
        ok=0
        why+=("skipped without a '# skip-allowed: TEST — REASON' line in pjdfstest.toml: ${undocumented[*]}")
    fi
    local failed=$((m[0] + e[0] + m[3] + e[3]))
    local skipped=$((m[1] - remount_skips + e[1]))
    local passed=$((m[2] + e[2]))
    [ "$failed" -eq 0 ] || ok=0
    if [ -e "$work/died-$name" ]; then
        ok=0
        why+=("secfs daemon died")
    fi
    if [ "$exited" -eq 0 ]; then
        ok=0
        why+=("secfs daemon did not exit after unmount")
    fi
    if grep -q 'panicked' "$log" 2>/dev/null; then
        ok=0
        why+=("secfs daemon panicked (see its log)")
    fi
    if [ -n "$leftovers" ]; then
        ok=0
        why+=("files left in the GuardPoint: $leftovers")
    fi

    local line
    line=$(printf 'pjdfstest %-8s %-12s passed=%d failed=%d skipped=%d (%ds)' \
        "$mode" "$cache" "$passed" "$failed" "$skipped" "$secs")
    if [ "$ok" -eq 1 ]; then
        echo "$line  OK"
    else
        echo "$line  FAILED"
        total_failed=$((total_failed + 1))
        local w
        for w in "${why[@]}"; do echo "    $w"; done
        # The failing tests with pjdfstest's messages.
        awk '/ FAILED$/ { print "    " $0; f = 1; n = 0; next }
             f && /^[ \t]/ && n < 15 { print "    " $0; n++; next }
             { f = 0 }' "$main_out" "$erofs_out"
        echo "    --- daemon log (tail) ---"
        tail -n 20 "$log" 2>/dev/null | sed 's/^/    /' || true
    fi
    # Skips are listed with their reasons.
    local k
    for k in "${skips[@]}"; do echo "    $k"; done
    results+=("$line")
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS"
        cp "$main_out" "$erofs_out" "$log" "$KEEP_LOGS/" 2>/dev/null || true
    fi
}

for mode in $modes; do
    for cache in $caches; do
        run_one "$mode" "$cache"
    done
done

echo
echo "pjdfstest summary:"
printf '  %s\n' "${results[@]}"
for k in "${!skip_allowed[@]}"; do
    [ -n "${skipped_anywhere[$k]+set}" ] ||
        echo "  note: $k is allowed to skip (pjdfstest.toml) but ran in every configuration"
done
if [ "$total_failed" -ne 0 ]; then
    echo "pjdfstest.sh: $total_failed configuration(s) failed" >&2
    exit 1
fi
echo "pjdfstest.sh: all configurations passed"
