#!/usr/bin/env bash
# Builds the test components in tests/components for wasm32-wasip2 and refreshes their
# prebuilt copies in tests/components/prebuilt/ (committed, so tests never need the target);
# the example counter component (examples/counter/component) goes to examples/counter/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../tests/components"
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2
mkdir -p prebuilt
for wasm in target/wasm32-wasip2/release/*.wasm; do
  case "$(basename "$wasm")" in
    # The example app's component lives with its manifest.
    counter.wasm) cp "$wasm" ../../examples/counter/counter.wasm ;;
    *) cp "$wasm" prebuilt/ ;;
  esac
  echo "built $(basename "$wasm") ($(stat -c %s "$wasm") bytes)"
done
