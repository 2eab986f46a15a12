#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 host, as root: formatting,
# lints, unit and kernel tests (nftables over netlink, real; the proxy in
# namespace labs), bounded fuzzing, the shipped systemd unit under a real
# systemd (nspawn), the demo, and the container tests with real Docker (the
# three-container test, frontends, cache, guarded networks, published
# ports). Any missing prerequisite is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh --docker
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n=== %s ===\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "the portcullis binary carries no test code (testsvc, the demo lab)"
deps=$(cargo tree --locked -p portcullis -e normal --prefix none)
if grep -E '^(testsvc|portcullis-demo) ' <<<"$deps"; then
  echo "the portcullis crate depends on test code (above): keep it in [dev-dependencies] or demo/" >&2
  exit 1
fi

step "systemd unit hardening (exposure must stay <= 3.0)"
systemd-analyze security --offline=true --threshold=30 packaging/portcullis.service | tail -n 1

step "unit and kernel tests (incl. the proxy namespace labs, tests/proxy)"
cargo test --locked --workspace -- --test-threads=2

step "fuzz (each cargo-fuzz target for ${FUZZ_SECONDS:=20}s, nightly)"
FUZZ_SECONDS="$FUZZ_SECONDS" bash ci/fuzz.sh

# The debug build is the one the tests above already compiled: building
# release as well would double CI time for no extra coverage. The workspace
# puts portcullis, portcullis-demo (what `portcullis demo` runs) and testsvc
# side by side in target/debug.
step "build"
cargo build --locked --workspace
bin="$PWD/target/debug/portcullis"

step "the shipped unit under a real systemd (systemd-nspawn, tests/systemd)"
PORTCULLIS_BIN="$bin" TESTSVC_BIN="$PWD/target/debug/testsvc" bash tests/systemd/run.sh

step "demo (network namespaces)"
"$bin" demo

step "three-container test (Docker)"
PORTCULLIS_BIN="$bin" bash tests/containers/run.sh

step "frontends and load balancing (Docker)"
PORTCULLIS_BIN="$bin" bash tests/containers/frontends.sh

step "three-container cache test (Docker, scenario 5)"
PORTCULLIS_BIN="$bin" bash tests/containers/cache.sh

step "guarded Docker networks by name (Docker)"
PORTCULLIS_BIN="$bin" bash tests/containers/guard.sh

step "ports Docker publishes on the host (Docker)"
PORTCULLIS_BIN="$bin" bash tests/containers/published.sh
