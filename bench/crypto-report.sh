#!/usr/bin/env bash
# Content-mode throughput against the same-run baselines of the foundation
# issue: xts vs `openssl speed -evp aes-256-xts`, cbc-cs1 encryption vs a
# serial CBC encrypt (two baselines: RustCrypto `cbc` in the criterion run,
# and `openssl speed -evp aes-256-cbc`), gcm (4 KiB units) vs aws-lc-rs
# sealing 1 MiB.
#
# Usage: bench/crypto-report.sh [--quick]   (from the repository root)
# Runs openssl before and after criterion and keeps the median of the
# readings, so machine noise hits both sides alike. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

crit_args=()
if [[ "${1:-}" == "--quick" ]]; then
  crit_args=(--warm-up-time 1 --measurement-time 2)
fi

openssl_speed() {
  # Bytes per second for 4096-byte blocks, one core. $1: evp cipher name.
  local name="${1^^}"
  openssl speed -elapsed -seconds 2 -bytes 4096 -evp "$1" 2>/dev/null |
    awk -v n="$name" '$1 == n { sub(/k$/, "", $2); print $2 * 1000 }'
}

xts=() cbc=()
xts+=("$(openssl_speed aes-256-xts)")
cbc+=("$(openssl_speed aes-256-cbc)")
cargo bench -p guardfs-bench --bench crypto -- "${crit_args[@]}" >/dev/null
xts+=("$(openssl_speed aes-256-xts)")
cbc+=("$(openssl_speed aes-256-cbc)")
xts+=("$(openssl_speed aes-256-xts)")
cbc+=("$(openssl_speed aes-256-cbc)")

OPENSSL_XTS="${xts[*]}" OPENSSL_CBC="${cbc[*]}" python3 - <<'PY'
import json, os, statistics, pathlib

xts_runs = [float(x) for x in os.environ["OPENSSL_XTS"].split()]
cbc_runs = [float(x) for x in os.environ["OPENSSL_CBC"].split()]
openssl = statistics.median(xts_runs)
openssl_cbc = statistics.median(cbc_runs)
root = pathlib.Path("target/criterion")

def gbps(group, fn, size):
    d = root / group / fn / size / "new"
    nbytes = json.loads((d / "benchmark.json").read_text())["throughput"]["Bytes"]
    ns = json.loads((d / "estimates.json").read_text())["median"]["point_estimate"]
    return nbytes / ns  # bytes per ns == GB/s

rows = []
for mode in ["xts", "cbc-cs1", "gcm", "clear"]:
    for size in ["4KiB", "1MiB"]:
        rows.append((mode, size, gbps("mode-encrypt", mode, size), gbps("mode-decrypt", mode, size)))

serial = gbps("baseline", "cbc-serial-encrypt", "4KiB")
awslc = gbps("baseline", "aws-lc-gcm-seal", "1MiB")
print("| mode | buffer | encrypt GB/s | decrypt GB/s |")
print("|---|---|---|---|")
for m, s, e, d in rows:
    print(f"| {m} | {s} | {e:.2f} | {d:.2f} |")
print()
print(f"openssl speed -evp aes-256-xts (4 KiB, median of {len(xts_runs)}): {openssl/1e9:.2f} GB/s")
print(f"serial CBC encrypt (RustCrypto cbc, 4 KiB): {serial:.2f} GB/s")
print(f"serial CBC encrypt (openssl speed -evp aes-256-cbc, 4 KiB, median of {len(cbc_runs)}): {openssl_cbc/1e9:.2f} GB/s")
print(f"aws-lc-rs AES-256-GCM seal, one 1 MiB buffer: {awslc:.2f} GB/s")
print()
xts = min(r[2] for r in rows if r[0] == "xts")
cbc = min(r[2] for r in rows if r[0] == "cbc-cs1")
gcm = [r[2] for r in rows if r[0] == "gcm" and r[1] == "4KiB"][0]
print("| target | measured | goal | met |")
print("|---|---|---|---|")
for name, ratio, goal in [
    ("xts encrypt / openssl xts", xts / (openssl / 1e9), 0.75),
    ("cbc-cs1 encrypt / serial CBC (RustCrypto)", cbc / serial, 4.0),
    ("cbc-cs1 encrypt / serial CBC (openssl)", cbc / (openssl_cbc / 1e9), 4.0),
    ("gcm 4 KiB units / aws-lc 1 MiB seal", gcm / awslc, 0.5),
]:
    print(f"| {name} | {ratio:.2f}x | >= {goal}x | {'yes' if ratio >= goal else 'NO'} |")
PY
