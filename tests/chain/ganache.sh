#!/usr/bin/env bash
# Starts and stops a local Ethereum node (ganache 7.9.2 from package.json) on
# 127.0.0.1 for tests and the demo.
#
#   ganache.sh start [--block-time N] [--db DIR] [--log FILE] [--port N]
#       picks a free port (or takes --port N: restarting a node with the same
#       --db on its old port brings back the same endpoint), starts node_modules/.bin/ganache in the background
#       with the deterministic test accounts (chain id and network id 1337),
#       waits until it answers eth_blockNumber, and prints "PORT PID".
#       Exit 77 if ganache is not installed (run scripts/setup.sh), 1 if it
#       does not come up.
#   ganache.sh stop PID
#       stops it (TERM, then KILL after 5 s) and waits until it is gone.
#
# The node's output goes to a log file (default: a fresh file under $TMPDIR),
# never to our stdout: ganache prints its accounts' private keys at startup,
# even with --logging.quiet. They are well-known test keys, but keys do not
# belong in test logs. The node is started directly, not through npx, so
# that the PID we print is the server itself (killing npx orphans it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin="$here/node_modules/.bin/ganache"

usage() { echo "usage: $0 start [--block-time N] [--db DIR] [--log FILE] [--port N] | stop PID" >&2; exit 2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

rpc_ok() {  # $1 = port
  curl -s -m 1 -H 'Content-Type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}' \
    "http://127.0.0.1:$1/" 2>/dev/null | grep -q '"result"'
}

start() {
  local block_time=0 db="" log="" fixed_port=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --block-time) block_time=${2:?}; shift 2 ;;
      --db) db=${2:?}; shift 2 ;;
      --log) log=${2:?}; shift 2 ;;
      --port) fixed_port=${2:?}; shift 2 ;;
      *) usage ;;
    esac
  done
  if [ ! -x "$bin" ]; then
    echo "ganache.sh: $bin missing (run scripts/setup.sh)" >&2
    exit 77
  fi
  if [ -z "$log" ]; then
    log=$(mktemp "${TMPDIR:-/tmp}/tally-ganache.XXXXXX.log")
  fi
  local args=(--wallet.deterministic --server.host 127.0.0.1
              --chain.chainId 1337 --chain.networkId 1337 --logging.quiet)
  [ "$block_time" != 0 ] && args+=(--miner.blockTime "$block_time")
  [ -n "$db" ] && args+=(--database.dbPath "$db")

  # The port can be taken between picking and binding: try a few.
  local attempt port pid
  for attempt in 1 2 3; do
    port=${fixed_port:-$(free_port)}
    (umask 077; : >"$log")
    "$bin" "${args[@]}" --server.port "$port" </dev/null >>"$log" 2>&1 &
    pid=$!
    local i
    for i in $(seq 1 600); do          # up to 30 s (typically 1.5 s)
      if ! kill -0 "$pid" 2>/dev/null; then
        break                          # exited: EADDRINUSE or worse
      fi
      if rpc_ok "$port"; then
        echo "$port $pid"
        return 0
      fi
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      echo "ganache.sh: no answer on port $port within 30 s (log: $log)" >&2
      exit 1
    fi
    wait "$pid" 2>/dev/null || true
    if [ -n "$fixed_port" ] || ! grep -q EADDRINUSE "$log"; then
      echo "ganache.sh: ganache exited at startup (log: $log):" >&2
      grep -v -i 'private key\|0x[0-9a-f]\{64\}' "$log" | tail -5 >&2 || true
      exit 1
    fi
  done
  echo "ganache.sh: no free port after 3 attempts" >&2
  exit 1
}

stop() {
  local pid=${1:?}
  case "$pid" in *[!0-9]*|'') usage ;; esac
  kill "$pid" 2>/dev/null || return 0
  local i
  for i in $(seq 1 100); do            # 5 s
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  echo "ganache.sh: PID $pid does not exit" >&2
  return 1
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) usage ;;
esac
