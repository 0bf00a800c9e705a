#!/usr/bin/env bash
# The GuardFS test command: what CI runs (via .ci/run) and what a developer
# runs before pushing. Run it as root on Debian 12; it installs what it needs.
#
#   sudo ./scripts/test.sh
#
# Stages: dependencies, formatting, clippy, every test of the workspace
# (unit, property, known-answer, fixtures), a short run of every fuzz
# target, and the benchmarks' smoke runs so the harness never rots. Timed
# assertions live nowhere in here.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "dependencies"
./scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "fuzz: every target 15 s, one job (scripts/fuzz.sh; long runs: FUZZING.md)"
./scripts/fuzz.sh --seconds 15

step "quickstart (the README's main job), twice: running it again must be fine"
./scripts/quickstart.sh /var/tmp/guardfs-ci-quickstart
./scripts/quickstart.sh /var/tmp/guardfs-ci-quickstart
/opt/guardfs/agent/bin/voradmin shutdown

step "pjdfstest: every mode, with and without the writeback cache"
./integration/pjdfstest.sh

step "fsx: every mode, with and without the writeback cache, 3 seeds x 50k operations"
./integration/fsx.sh

step "bench smoke (criterion --test: each benchmark runs once, untimed)"
cargo bench -p guardfs-bench --locked -- --test

step "bench smoke (bench/compare.sh --smoke: every configuration, a few seconds each)"
./bench/compare.sh --smoke

step "bench smoke (bench/xform.sh --smoke: dataxform against cp -a, tiny trees)"
./bench/xform.sh --smoke --dir /var/tmp/guardfs-ci-xform-bench

step "all tests passed"
