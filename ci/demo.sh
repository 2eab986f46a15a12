#!/usr/bin/env bash
# The demo from a fresh Debian 12 host: set up, build, run `portcullis demo`
# (scenarios 1-4 in network namespaces; it removes everything it made).
# `portcullis demo` runs the portcullis-demo binary (the demo/ crate) from
# next to itself, so both are built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q -p portcullis -p portcullis-demo
exec target/release/portcullis demo
