#!/usr/bin/env bash
# Guard a directory with GuardFS and show it working.
#
#   sudo ./scripts/quickstart.sh [DIR]      (default DIR: /srv/guardfs-demo)
#
# Builds secfs, installs it under /opt/guardfs/agent, creates a local key
# (kept in /opt/guardfs/agent/.sec, root only), guards DIR, writes a sample
# file, and shows its plaintext through the GuardPoint next to the
# ciphertext on disk. Running it again reuses the key and the mount.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-/srv/guardfs-demo}
ROOT=/opt/guardfs/agent
SECFS=$ROOT/bin/secfs
KEY=$ROOT/.sec/default.key

if [[ $(id -u) -ne 0 ]]; then
  echo "quickstart: run as root (mounting a GuardPoint needs it)" >&2
  exit 1
fi

echo "== build"
cargo build --release --locked -p guardfs-shim
install -d -m 0755 "$ROOT/bin"
install -d -m 0700 "$ROOT/.sec"
# A running daemon keeps its binary busy; install beside it and rename.
install -m 0755 target/release/secfs "$SECFS.new" && mv -f "$SECFS.new" "$SECFS"

echo "== key"
if [[ ! -f $KEY ]]; then
  "$SECFS" genkey "$KEY"
else
  echo "reusing $KEY"
fi

echo "== guard $DIR"
mkdir -p "$DIR"
if grep -q " $(realpath "$DIR") fuse.secfs " /proc/mounts; then
  echo "$DIR is already guarded"
else
  "$SECFS" mount "$DIR" --key-file "$KEY" --mode xts
fi

echo "== write a file through the GuardPoint"
echo "Hello from GuardFS, written $(date -u +%FT%TZ)" > "$DIR/hello.txt"

echo "== what applications see ($DIR/hello.txt)"
cat "$DIR/hello.txt"

echo "== what is on disk (the lower file, seen from a private mount namespace without the GuardPoint)"
unshare -m sh -c "umount -l '$DIR' && ls -l '$DIR/hello.txt' &&
  echo 'header (4096 bytes; magic, mode, key name, wrapped data key):' && od -A d -t x1z -N 32 '$DIR/hello.txt' &&
  echo 'contents (ciphertext):' && od -A d -t x1z -j 4096 '$DIR/hello.txt'"

echo "== mounts"
grep " fuse.secfs " /proc/mounts
echo
echo "$DIR is guarded. Unguard it with: $SECFS umount $DIR"
