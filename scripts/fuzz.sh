#!/usr/bin/env bash
# Run the fuzz targets of fuzz/ (see FUZZING.md): build them once, run each
# for N seconds with one job, fail on any crash, leak, timeout or OOM and
# print the input that caused it.
#
#   scripts/fuzz.sh [--seconds N] [TARGET...]     (default: 30 s, every target)
#   scripts/fuzz.sh --seconds 3600 policy_json    (a long run of one target)
#   scripts/fuzz.sh --list
#
# Toolchain: cargo-fuzz (libFuzzer) on the stable toolchain. cargo-fuzz
# passes nightly-only `-Z` flags to rustc; RUSTC_BOOTSTRAP=1 lets stable
# accept them (there is one toolchain here and no nightly to fetch). The
# sanitizer is off (`-s none`): the parsers are safe Rust, and without ASan
# the build is much lighter and the runs twice as fast; debug assertions and
# overflow checks stay on (cargo-fuzz's default), so arithmetic overflow in
# a parser is a crash. afl.rs was the alternative; libFuzzer needs no AFL++
# build and no core_pattern/CPU-governor setup, and runs in-process.
#
# Installs what it needs (idempotent): cargo-fuzz with cargo, and g++ (the
# libFuzzer runtime is C++) with apt-get when run as root on Debian.
#
# New corpus entries go to fuzz/target/corpus/TARGET (not committed); the
# committed seeds in fuzz/corpus/TARGET are read only. Crash inputs land in
# fuzz/artifacts/TARGET/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=30
list=0
targets=()
while (($#)); do
  case $1 in
    --seconds)
      seconds=${2:?--seconds needs a number}
      shift 2
      ;;
    --seconds=*)
      seconds=${1#*=}
      shift
      ;;
    --list)
      list=1
      shift
      ;;
    -h | --help)
      sed -n '2,26p' "$0"
      exit 0
      ;;
    -*)
      echo "fuzz.sh: unknown option $1" >&2
      exit 2
      ;;
    *)
      targets+=("$1")
      shift
      ;;
  esac
done
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds > 0)) || {
  echo "fuzz.sh: --seconds wants a positive number, not $seconds" >&2
  exit 2
}

# --- what it needs
if ! command -v c++ >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends g++
  else
    echo "fuzz.sh: a C++ compiler is needed (libFuzzer); install g++ (as root: apt-get install g++)" >&2
    exit 1
  fi
fi
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

export RUSTC_BOOTSTRAP=1
fuzz() { (cd fuzz && cargo fuzz "$@"); }

all=()
mapfile -t all < <(fuzz list)
if ((list)); then
  printf '%s\n' "${all[@]}"
  exit 0
fi
if ((${#targets[@]} == 0)); then
  targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
  if ! printf '%s\n' "${all[@]}" | grep -qx -- "$t"; then
    echo "fuzz.sh: no target $t (have: ${all[*]})" >&2
    exit 2
  fi
done

# --- build once, then run each
# (`cargo fuzz build` takes one target or none, meaning all.)
if ((${#targets[@]} == 1)); then
  fuzz build -s none "${targets[0]}"
else
  fuzz build -s none
fi

failed=()
summary=()
for t in "${targets[@]}"; do
  work=$PWD/fuzz/target/corpus/$t
  seeds=$PWD/fuzz/corpus/$t
  mkdir -p "$work" "$seeds"
  log=fuzz/target/fuzz-$t.log
  echo "--- fuzz $t for ${seconds}s (log: $log)"
  start=$(date +%s)
  set +e
  # One job, in-process. -timeout: one input taking 10 s is a hang; the
  # run as a whole ends after max_total_time.
  fuzz run -s none "$t" "$work" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  if ((rc != 0)); then
    tail -40 "$log"
    crash=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
    echo "fuzz.sh: $t FAILED (exit $rc); input: ${crash:-none written, see $log}"
    failed+=("$t ${crash:-}")
    summary+=("$t: FAILED after ${took}s, input ${crash:-none written, see $log}")
  else
    summary+=("$t: ${execs:-?} executions in ${took}s, ${cov:-cov: ?}, corpus $corpus")
  fi
done

echo
echo "=== fuzz summary (${seconds}s per target, 1 job, no sanitizer)"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
