#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a bounded time each
# (FUZZ_SECONDS, default 30; FUZZ_TARGETS to pick some). cargo-fuzz needs the nightly toolchain; it is
# installed when missing, and a missing nightly is a failure, not a skip.
# A crash input is copied to fuzz/regressions/TARGET/, where `cargo test`
# (portcullis::fuzzing::tests::regressions_replay) replays it from then on:
# commit it with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs="${FUZZ_SECONDS:-30}"
read -r -a targets <<<"${FUZZ_TARGETS:-request_head forwarded_head path rule_file}"

die() { echo "fuzz: $*" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' \
  || die "the nightly toolchain is needed for cargo-fuzz: rustup toolchain install nightly"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked -q || die "cannot install cargo-fuzz"
fi

# No sanitizer: the code under test is safe Rust, so panics are the
# findings, and the build is several times faster.
cargo +nightly fuzz build -s none

failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "=== fuzz $t for ${secs}s ==="
  if ! cargo +nightly fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>"fuzz/artifacts/$t.log"; then
    tail -n 40 "fuzz/artifacts/$t.log" >&2
    for a in "fuzz/artifacts/$t"/*; do
      [ -f "$a" ] || continue
      cp "$a" "fuzz/regressions/$t/"
      echo "fuzz: $t found a crash; input saved as fuzz/regressions/$t/$(basename "$a")" >&2
    done
    failed=1
  else
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "fuzz/artifacts/$t.log" | tail -n 2
  fi
done
[ "$failed" = 0 ] || die "crash inputs were saved under fuzz/regressions/: fix the code, keep the inputs"
echo "fuzz: no crash in ${#targets[@]} targets"
