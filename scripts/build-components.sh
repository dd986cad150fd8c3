#!/usr/bin/env bash
# Builds the test components in tests/components for wasm32-wasip2.
#
#   scripts/build-components.sh           # refresh the committed prebuilt copies
#   scripts/build-components.sh --check   # rebuild and compare with the committed copies
#
# The prebuilt copies (tests/components/prebuilt/, and examples/*/NAME.wasm for the
# example apps) are committed so tests never need the wasm target. Builds are reproducible:
# paths are remapped, so the components' bytes do not depend on where the checkout or cargo's
# registry is (and every component is inside the components' workspace: cargo hashes a member
# outside it by its absolute path, which changes the code's layout). `--check` fails when a
# committed component differs from what its source builds to, and is skipped, saying so, only
# when the wasm32-wasip2 target cannot be installed here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
check=false
[ "${1:-}" = "--check" ] && check=true

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  if ! rustup target add wasm32-wasip2 >/dev/null 2>&1; then
    if $check; then
      echo "components: SKIPPED the prebuilt check: the wasm32-wasip2 target is not installed and cannot be installed here" >&2
      exit 0
    fi
    echo "components: the wasm32-wasip2 target is required (rustup target add wasm32-wasip2)" >&2
    exit 1
  fi
fi

target_dir=$root/tests/components/target
$check && target_dir=$(mktemp -d /tmp/trellis-components.XXXXXX)
registry=${CARGO_HOME:-$HOME/.cargo}/registry
export RUSTFLAGS="--remap-path-prefix=$root=/trellis --remap-path-prefix=$registry=/cargo-registry"
(cd tests/components && cargo build --quiet --release --locked --target wasm32-wasip2 --target-dir "$target_dir")

status=0
for wasm in "$target_dir"/wasm32-wasip2/release/*.wasm; do
  name=$(basename "$wasm")
  case "$name" in
    # The example app's component lives with its manifest.
    counter.wasm) committed=examples/counter/counter.wasm ;;
    files.wasm) committed=examples/files/files.wasm ;;
    events.wasm) committed=examples/events/events.wasm ;;
    *) committed=tests/components/prebuilt/$name ;;
  esac
  if $check; then
    if cmp -s "$wasm" "$committed"; then
      echo "components: $committed matches its source"
    else
      echo "components: $committed differs from what its source builds to (run scripts/build-components.sh and commit)" >&2
      status=1
    fi
  else
    mkdir -p "$(dirname "$committed")"
    cp "$wasm" "$committed"
    echo "built $committed ($(stat -c %s "$wasm") bytes)"
  fi
done
$check && rm -rf "$target_dir"
exit $status
