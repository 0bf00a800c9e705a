#!/usr/bin/env bash
# Install what the build and the tests need on a fresh Debian 12 machine
# that has only the Rust toolchain, gcc and Python. Idempotent: it skips
# what is already present.
set -euo pipefail

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: run as root (apt packages are installed)" >&2
    exit 1
  fi
}

# openssl: the crypto bench's baseline; util-linux (setpriv, unshare, flock),
# tar, diffutils and python3: the end-to-end tests.
apt_packages=(openssl util-linux tar diffutils python3)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  need_root
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for c in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
    rustup component add "$c"
  fi
done

# Filesystem test suites, pinned.
cargo_tools=("pjdfstest@0.2.2" "fsx@0.3.2")
for spec in "${cargo_tools[@]}"; do
  name=${spec%@*}
  version=${spec#*@}
  if ! cargo install --list 2>/dev/null | grep -q "^$name v$version:"; then
    cargo install --locked "$name" --version "$version"
  fi
done
