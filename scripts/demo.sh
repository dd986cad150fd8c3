#!/usr/bin/env bash
# Sets up and runs the demo on a fresh machine: `trellis up` of the example HTTP counter
# (examples/counter) — a local lattice with its own nats-server (JetStream), the host running
# the counter component, and the http-server and keyvalue-nats providers.
#
#   scripts/demo.sh            # runs until Ctrl-C; then: curl http://127.0.0.1:8000/ → 1, 2, 3…
#   scripts/demo.sh --check    # brings it up, counts three times with curl, stops (a smoke test)
#
# COUNTER_PORT (default 8000) and TRELLIS_NATS_PORT (default 4222) move it to other ports.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# nats-server, installed once into ~/.cache/trellis (where `trellis up` looks for it).
scripts/services.sh install nats >/dev/null
echo "demo: building trellis and the providers (first build takes a few minutes)" >&2
cargo build --quiet --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
trellis="$target_dir/debug/trellis"
port="${COUNTER_PORT:-8000}"
export COUNTER_PORT="$port"

if [ "${1:-}" != "--check" ]; then
  exec "$trellis" up examples/counter/app.yaml --nats-port "${TRELLIS_NATS_PORT:-4222}"
fi

log=$(mktemp)
"$trellis" up examples/counter/app.yaml --nats-port 0 2>"$log" &
up_pid=$!
trap 'kill -INT $up_pid 2>/dev/null; wait $up_pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 600); do
  grep -q "ready in" "$log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.2
done
cat "$log" >&2
for _ in 1 2 3; do
  echo "demo: curl http://127.0.0.1:$port/ → $(curl -fsS "http://127.0.0.1:$port/")"
done
