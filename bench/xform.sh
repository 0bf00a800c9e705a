#!/usr/bin/env bash
# Data transformation benchmark (bench/xform.py): dataxform encrypt, deep
# and shallow rekey, decrypt, against cp -a on the same disk, interleaved
# over rounds, medians.
#
#   sudo bench/xform.sh                      # 1 GiB + 20k small files, 3 rounds
#   sudo bench/xform.sh --smoke              # tiny trees, one round
#   sudo bench/xform.sh --dir /mnt/x --rounds 5 --markdown out.md
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "xform.sh: run as root (it mounts GuardPoints and drops caches)" >&2
  exit 1
fi
cargo build --release --locked -p guardfs-shim -p guardfs-control --bins >&2
exec python3 bench/xform.py --secfs "$PWD/target/release/secfs" \
  --voradmin "$PWD/target/release/voradmin" "$@"
