#!/usr/bin/env bash
# Runs the benchmarks against real services started on loopback (release build).
#   scripts/bench.sh            # all benchmarks
#   BENCH_SCALE=0.2 scripts/bench.sh   # shorter run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/services.sh start nats redis
eval "$(scripts/services.sh env)"
# The keyvalue benchmark starts the provider binaries: build them in release first.
cargo build --release --bins
cargo bench -p trellis-sdk --bench transport
cargo bench -p trellis-host --bench host
cargo bench -p trellis-conformance --bench keyvalue
