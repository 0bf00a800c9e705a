# Shared by integration/*.sh (sourced): unmounting a GuardPoint mounted by
# the calling script and waiting for its daemon. Expects SECFS (the secfs
# binary) and the array `mounted` (GuardPoints still mounted) in the caller.

# Wait until a daemon has exited after its unmount.
wait_gone() {
    local pid=$1 i
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Unmount GuardPoint $1 (lazily if busy), forget it, wait for daemon $2.
unmount() {
    local gp=$1 pid=$2 me=${0##*/} m rest=()
    if ! "$SECFS" umount "$gp" >/dev/null; then
        echo "$me: $gp busy at unmount; detaching it" >&2
        "$SECFS" umount "$gp" --lazy >/dev/null
    fi
    for m in "${mounted[@]}"; do
        [ "$m" = "$gp" ] || rest+=("$m")
    done
    mounted=("${rest[@]}")
    wait_gone "$pid" || {
        echo "$me: secfs daemon $pid did not exit after unmount" >&2
        return 1
    }
}
