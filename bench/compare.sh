#!/usr/bin/env bash
# Side-by-side benchmark of GuardPoints (every mode) against raw ext4,
# gocryptfs and securefs, on one RAM-backed ext4 in one run.
#
#   sudo bench/compare.sh                 # 3 interleaved rounds, 512 MiB files
#   sudo bench/compare.sh --smoke         # a few seconds per configuration (CI)
#   sudo bench/compare.sh --disk /var/tmp # ext4 image on the real disk instead
#   sudo bench/compare.sh --markdown out.md --rounds 5 --configs raw,xts,gocryptfs
#
# Installs fio, gocryptfs, securefs and e2fsprogs if missing, builds secfs in
# release mode, then runs bench/compare.py (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "compare.sh: run as root (it mounts filesystems and drops caches)" >&2
  exit 1
fi
missing=()
for p in fio gocryptfs securefs e2fsprogs python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo build --release --locked -p guardfs-shim >&2
exec python3 bench/compare.py --secfs "$PWD/target/release/secfs" "$@"
