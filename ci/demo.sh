#!/usr/bin/env bash
# The demo from a fresh Debian 12 host: set up, build, run `portcullis demo`
# (scenarios 1-2 in network namespaces; it removes everything it made).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q
exec target/release/portcullis demo
