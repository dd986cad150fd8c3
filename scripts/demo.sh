#!/usr/bin/env bash
# Sets up and runs the demo on a fresh machine: a local lattice (nats-server with JetStream),
# the example counter provider joining it standalone, and a client that links a component to
# it through the lattice store and calls it.
#
# Until the `trellis` CLI and host land (issues #3 and #6), this is the whole lattice.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TRELLIS_RUN="${TRELLIS_RUN:-$(mktemp -d /tmp/trellis-demo.XXXXXX)}"
cleanup() {
  [ -n "${provider_pid:-}" ] && kill "$provider_pid" 2>/dev/null && wait "$provider_pid" 2>/dev/null
  scripts/services.sh stop
}
trap cleanup EXIT

scripts/services.sh start nats
eval "$(scripts/services.sh env)"
cargo build --quiet -p trellis-sdk --example counter_provider --example counter_client
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

echo "demo: starting the counter provider on lattice 'demo'"
"$target_dir/debug/examples/counter_provider" --provider-id counter --lattice demo \
  --nats-url "$TRELLIS_NATS_URL" &
provider_pid=$!
"$target_dir/debug/examples/counter_client" "$TRELLIS_NATS_URL" demo 3
echo "demo: done; stopping the provider (SIGTERM, graceful) and nats-server"
