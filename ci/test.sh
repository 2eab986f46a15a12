#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 host, as root: formatting,
# lints, unit and kernel tests (nftables over netlink, real; the proxy in
# namespace labs), bounded fuzzing, the demo, and the three-container test
# with real Docker. Any missing prerequisite is a
# failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh --docker
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n=== %s ===\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "unit and kernel tests (incl. the proxy namespace labs, tests/proxy)"
cargo test --locked --workspace -- --test-threads=2

step "fuzz (each cargo-fuzz target for ${FUZZ_SECONDS:=20}s, nightly)"
FUZZ_SECONDS="$FUZZ_SECONDS" bash ci/fuzz.sh

step "build"
cargo build --locked --release

step "demo (network namespaces)"
target/release/portcullis demo

step "three-container test (Docker)"
PORTCULLIS_BIN="$PWD/target/release/portcullis" bash tests/containers/run.sh
