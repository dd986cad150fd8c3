#!/usr/bin/env bash
# Runs the benchmarks against real services started on loopback (release build).
#   scripts/bench.sh            # all benchmarks
#   BENCH_SCALE=0.2 scripts/bench.sh   # shorter run
#
# Installs what the HTTP benchmark compares with, if missing: wrk (Debian package) and
# wasmtime-cli 45.0.3 (the engine version the host uses; `cargo install`, ~12 min once,
# into ~/.cache/trellis/tools).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TRELLIS_HOME="${TRELLIS_HOME:-$HOME/.cache/trellis}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: apt-get install wrk" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
export TRELLIS_WASMTIME="${TRELLIS_WASMTIME:-$TRELLIS_HOME/tools/bin/wasmtime}"
if [ ! -x "$TRELLIS_WASMTIME" ]; then
  echo "bench: cargo install wasmtime-cli 45.0.3 (once)" >&2
  cargo install --quiet wasmtime-cli --version 45.0.3 --locked --root "$TRELLIS_HOME/tools"
fi

# Private service directory, and the services stopped however the run ends (as test.sh does).
export TRELLIS_RUN="${TRELLIS_RUN:-$(mktemp -d /tmp/trellis-bench.XXXXXX)}"
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start nats redis s3 azure kafka
eval "$(scripts/services.sh env)"
# The keyvalue and HTTP benchmarks start the provider binaries: build them in release first.
cargo build --release --bins
cargo bench -p trellis-wrpc-nats --bench transport
cargo bench -p trellis-host --bench host
cargo bench -p trellis-conformance --bench keyvalue
cargo bench -p trellis-conformance --bench listing
cargo bench -p trellis-conformance --bench blobstore
cargo bench -p trellis-conformance --bench messaging
cargo bench -p trellis-provider-http-server --bench http
