#!/usr/bin/env bash
# Builds the test components in tests/components for wasm32-wasip2 and refreshes their
# prebuilt copies in tests/components/prebuilt/ (committed, so tests never need the target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../tests/components"
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2
mkdir -p prebuilt
for wasm in target/wasm32-wasip2/release/*.wasm; do
  cp "$wasm" prebuilt/
  echo "built $(basename "$wasm") ($(stat -c %s "$wasm") bytes)"
done
