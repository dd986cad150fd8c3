#!/usr/bin/env bash
# Sets up and runs every Trellis test on a fresh machine: installs and starts the real services
# the tests need (loopback, free ports), runs the workspace tests, stops the services.
#
#   scripts/test.sh                 # all tests
#   scripts/test.sh -p trellis-sdk  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "test: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "test: python3 is required" >&2; exit 1; }

# Private service directory per run, so parallel runs and leftovers never collide.
export TRELLIS_RUN="${TRELLIS_RUN:-$(mktemp -d /tmp/trellis-test.XXXXXX)}"
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start nats redis s3 azure kafka
eval "$(scripts/services.sh env)"

# The committed prebuilt test components must be what their sources build to (skipped, and
# said, only where the wasm32-wasip2 target cannot be installed).
scripts/build-components.sh --check

log="$TRELLIS_RUN/test-output.log"
{
  # Process-level tests run the example and provider binaries: build them under their plain
  # names first.
  cargo build --workspace --examples --bins
  # Every target but the benchmarks (they are programs that measure; scripts/bench.sh runs
  # them in release; clippy --all-targets checks that they build).
  # Every binary runs even when one fails, so one run reports every failure.
  cargo test --workspace --no-fail-fast --lib --bins --tests --examples "$@"
  # Doc tests (examples in the API docs) are not part of the above.
  cargo test --workspace --doc "$@"
} 2>&1 | tee "$log"

# One closing line for the whole run (every cargo test binary prints its own).
summary=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed;/) p += $(i-1); if ($i ~ /^failed;/) f += $(i-1) } }
  END { printf "%d passed, %d failed\n", p, f }' "$log")
echo "$summary"
[ -n "${TRELLIS_TEST_SUMMARY:-}" ] && echo "$summary" > "$TRELLIS_TEST_SUMMARY"
exit 0
