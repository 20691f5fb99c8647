#!/usr/bin/env bash
# Starts `npm start` with no DATABASE_URL (embedded PostgreSQL), reads the printed bootstrap key,
# asks viewer with it, restarts, and checks the data survived and no key was printed again.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=$(mktemp -d)
log=$(mktemp)
pid=
# npm start runs the server as a grandchild: signals go to the whole process group (setsid below).
stop() {
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 -- "-$pid" 2>/dev/null || { pid=; return 0; }
    sleep 0.5
  done
  echo "smoke: the server did not stop within 30 s of SIGTERM"; kill -KILL -- "-$pid" 2>/dev/null || true; pid=; return 1
}
trap 'stop || true; rm -rf "$data_dir" "$log"' EXIT
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")

start() {
  : >"$log"
  setsid env -u DATABASE_URL DATA_DIR="$data_dir" PORT="$port" npm start >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "smoke: server did not become ready"; cat "$log"; exit 1
}

start
key=$(sed -n 's/^BOOTSTRAP ADMIN KEY (shown once, store it now): //p' "$log")
[ -n "$key" ] || { echo "smoke: no bootstrap key printed"; cat "$log"; exit 1; }
query='{"query":"{ viewer { user { name } permissions } }"}'
curl -sf -H "authorization: Bearer $key" -H 'content-type: application/json' -d "$query" "http://127.0.0.1:$port/graphql" | grep -q '"name":"admin"'
stop

start
if grep -q 'BOOTSTRAP ADMIN KEY' "$log"; then echo "smoke: key printed on restart"; exit 1; fi
curl -sf -H "x-api-key: $key" -H 'content-type: application/json' -d "$query" "http://127.0.0.1:$port/graphql" | grep -q '"name":"admin"'
stop
echo "smoke: embedded start, bootstrap, restart: ok"
