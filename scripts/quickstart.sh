#!/usr/bin/env bash
# Guard a directory with GuardFS and show it working, on the embedded local
# key store (no key manager needed).
#
#   sudo ./scripts/quickstart.sh [DIR]      (default DIR: /srv/guardfs-demo)
#
# Builds and installs the agent under /opt/guardfs/agent (binaries in bin/,
# CTE command names linked into /usr/local/bin), starts vmd (which starts the
# secfs service; no systemd needed), creates the local key quickstart_key and
# the policy quickstart_policy, guards DIR, writes a sample file, and shows
# its plaintext through the GuardPoint next to the ciphertext on disk.
# Running it again is fine: it reuses the key, the policy and the GuardPoint.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-/srv/guardfs-demo}
ROOT=/opt/guardfs/agent
BIN=$ROOT/bin

if [[ $(id -u) -ne 0 ]]; then
  echo "quickstart: run as root (guarding a directory needs it)" >&2
  exit 1
fi

echo "== build"
cargo build --release --locked -p guardfs-shim -p guardfs-control

echo "== install into $BIN"
install -d -m 0755 "$BIN"
changed=0
for b in secfs vmd voradmin; do
  cmp -s "target/release/$b" "$BIN/$b" || changed=1
done
if [[ $changed -eq 1 && -x $BIN/voradmin ]] && "$BIN/voradmin" status >/dev/null 2>&1; then
  # secfs trusts exactly the vmd binary it was started for: restart both.
  echo "new binaries: stopping the running agent first"
  "$BIN/voradmin" shutdown
fi
for b in secfs vmd voradmin; do
  # Unchanged binaries stay in place: secfs accepts requests only from the
  # vmd binary it was started for, file and hash. A running binary is busy:
  # install beside it and rename.
  if ! cmp -s "target/release/$b" "$BIN/$b"; then
    install -m 0755 "target/release/$b" "$BIN/$b.new" && mv -f "$BIN/$b.new" "$BIN/$b"
  fi
done
for alias in secfsd vmsec register_host vmutil dataxform; do
  ln -sfn voradmin "$BIN/$alias"
done
for b in vmd voradmin secfsd vmsec register_host vmutil dataxform secfs; do
  ln -sfn "$BIN/$b" "/usr/local/bin/$b"
done

echo "== start vmd, create the local key and policy, guard $DIR"
"$BIN/voradmin" quickstart "$DIR"

echo "== write a file through the GuardPoint"
echo "Hello from GuardFS, written $(date -u +%FT%TZ)" > "$DIR/hello.txt"

echo "== what applications see ($DIR/hello.txt)"
cat "$DIR/hello.txt"

echo "== its header, as vmd reads it (voradmin secfs iv get)"
"$BIN/voradmin" secfs iv get "$DIR/hello.txt"

echo "== what is on disk (the lower file, seen from a private mount namespace without the GuardPoint)"
unshare -m sh -c "umount -l '$DIR' && ls -l '$DIR/hello.txt' &&
  echo 'header (4096 bytes; magic, mode, key name, wrapped data key):' && od -A d -t x1z -N 32 '$DIR/hello.txt' &&
  echo 'contents (ciphertext):' && od -A d -t x1z -j 4096 '$DIR/hello.txt'"

echo "== secfsd -status guard"
"$BIN/secfsd" -status guard
echo
echo "$DIR is guarded. Try: vmsec status | voradmin status | secfsd -unguard $DIR | voradmin shutdown"
