#!/usr/bin/env bash
# `task bench`: throughput and latency of Tessera's HTTP routes against a
# release build, with the ceilings they are judged against measured in the
# same run on the same cores: the no-op `/health` route, `pgbench -S` on the
# same PostgreSQL, and raw argon2id verifications per second.
#
# Uses its own PostgreSQL cluster under .data/bench-postgres (started and
# stopped by `tessera serve`). Needs wrk and pgbench (Debian: wrk, postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${BENCH_SECONDS:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
PORT=${BENCH_PORT:-18080}
BASE="http://127.0.0.1:$PORT"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
command -v wrk >/dev/null || { echo "wrk is needed: sudo apt-get install wrk" >&2; exit 1; }
command -v pgbench >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/pgbench" >/dev/null \
  || { echo "pgbench is needed: sudo apt-get install postgresql" >&2; exit 1; }
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -n 1)

cargo build --release --locked --bin tessera --example argon2_rate --example executions_bench --example embed_bench >&2
BIN="$TARGET_DIR/release/tessera"
WORK=$(mktemp -d)
trap 'kill -TERM "${SERVER_PID:-0}" 2>/dev/null || true; wait "${SERVER_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

export APP_ENV=development LOCAL_POSTGRES_DIR=.data/bench-postgres HOST=127.0.0.1 PORT RUST_LOG=warn
export JWT_SECRET=bench-only-secret-0123456789abcdef0123456789
export FIRST_ADMIN_EMAIL=bench-admin@example.com FIRST_ADMIN_PASSWORD=bench-admin-password
export MAX_FAILED_LOGINS=1000000000 MAX_FAILED_LOGINS_PER_CLIENT=1000000000 MAX_FAILED_LOGINS_PER_ACCOUNT=1000000000 SIGNUPS_PER_CLIENT=1000000000 PASSWORD_HASH_QUEUE=100000 MAX_IN_FLIGHT_REQUESTS=100000 DATABASE_POOL_SIZE=16
# The HTTP figures are for the API alone; the execution benchmark runs its own workers.
export WORKER_CONCURRENCY=0
# The inference figures measure batching, not the per-user limit.
export INFERENCE_TOKENS_PER_MINUTE=0 INFERENCE_DEVICE=${INFERENCE_DEVICE:-cpu}
MODEL_DIR=${INFERENCE_MODEL_DIR:-models/all-MiniLM-L6-v2}
unset DATABASE_URL
"$BIN" serve >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 1 600); do curl -fs "$BASE/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$BASE/ready" >/dev/null || { cat "$WORK/serve.err" >&2; exit 1; }
DB_URL=$("$BIN" database-url 2>/dev/null)

login() { curl -fs -X POST "$BASE/api/v1/auth/token" --data-urlencode "username=$1" --data-urlencode "password=$2"; }
token_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
ADMIN_TOKEN=$(login "$FIRST_ADMIN_EMAIL" "$FIRST_ADMIN_PASSWORD" | token_of)
# 150 accounts so that a page of 100 is full (no passwords needed to list them).
psql -q "$DB_URL" -c "INSERT INTO users (id, email, full_name)
  SELECT gen_random_uuid(), 'listed-' || g || '-' || extract(epoch FROM now())::bigint || '@example.com', 'Listed User'
  FROM generate_series(1, 150) g" >/dev/null
ME_EMAIL="bench-user-$(date +%s%N)@example.com"
curl -fs -X POST "$BASE/api/v1/users" -H 'content-type: application/json' \
  -d "{\"email\":\"$ME_EMAIL\",\"full_name\":\"Bench User\",\"password\":\"bench-user-password\"}" >/dev/null
USER_TOKEN=$(login "$ME_EMAIL" bench-user-password | token_of)

cat >"$WORK/signup.lua" <<LUA
local n = 0
local run = "$(date +%s%N)"
request = function()
  n = n + 1
  local body = '{"email":"load-' .. run .. '-' .. n .. '@example.com","full_name":"Load","password":"load-test-password"}'
  return wrk.format("POST", "/api/v1/users", {["Content-Type"] = "application/json"}, body)
end
LUA
cat >"$WORK/login.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "username=$ME_EMAIL&password=bench-user-password"
LUA

# wrk with one thread (the other core serves); prints "rps p50 p99".
load() {
  local out
  out=$(wrk -t1 -c"$1" -d"${SECONDS_EACH}s" --latency "${@:2}")
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  local errors
  errors=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')
  echo "$rps $p50 $p99 ${errors:-}"
}

row() { printf '| %s | %s | %s | %s | %s\n' "$1" "$2" "$3" "$4" "${5:-}"; }

echo "Tessera benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), ${SECONDS_EACH}s per run, $CONNECTIONS connections, wrk -t1"
echo
echo "| route | requests/s | p50 | p99 | notes"
echo "| --- | --- | --- | --- | ---"
read -r rps p50 p99 rest <<<"$(load "$CONNECTIONS" "$BASE/health")"; row "GET /health" "$rps" "$p50" "$p99" "$rest"; HEALTH_RPS=$rps
read -r rps p50 p99 rest <<<"$(load "$CONNECTIONS" -H "Authorization: Bearer $USER_TOKEN" "$BASE/api/v1/users/me")"; row "GET /api/v1/users/me" "$rps" "$p50" "$p99" "$rest"; ME_RPS=$rps
read -r rps p50 p99 rest <<<"$(load "$CONNECTIONS" -H "Authorization: Bearer $ADMIN_TOKEN" "$BASE/api/v1/users?limit=100")"; row "GET /api/v1/users?limit=100" "$rps" "$p50" "$p99" "$rest"
read -r rps p50 p99 rest <<<"$(load "$CONNECTIONS" -s "$WORK/signup.lua" "$BASE")"; row "POST /api/v1/users" "$rps" "$p50" "$p99" "$rest"
read -r rps p50 p99 rest <<<"$(load "$CONNECTIONS" -s "$WORK/login.lua" "$BASE/api/v1/auth/token")"; row "POST /api/v1/auth/token" "$rps" "$p50" "$p99" "$rest"; LOGIN_RPS=$rps

# /health while a login flood saturates the hashing slots.
wrk -t1 -c"$CONNECTIONS" -d"$((SECONDS_EACH + 2))s" -s "$WORK/login.lua" "$BASE/api/v1/auth/token" >"$WORK/flood.out" &
FLOOD_PID=$!
sleep 1
read -r rps p50 p99 rest <<<"$(load 4 "$BASE/health")"; row "GET /health during a login flood" "$rps" "$p50" "$p99" "4 connections; flood: $CONNECTIONS connections on /auth/token"
wait "$FLOOD_PID"

# Ceilings, same cores, same run.
psql -q "$DB_URL" -c "DROP DATABASE IF EXISTS pgbench" -c "CREATE DATABASE pgbench" >/dev/null 2>&1
PGBENCH_URL=${DB_URL/\/tessera\?/\/pgbench?}
"$PGBENCH" -q -i -s 10 "$PGBENCH_URL" >/dev/null 2>&1
pgbench_tps() { "$PGBENCH" -S -M prepared -c "$1" -j 1 -T "$SECONDS_EACH" "$PGBENCH_URL" 2>/dev/null | awk '/^tps/ {print $3; exit}'; }
PG_TPS_POOL=$(pgbench_tps 16)
PG_TPS_WIDE=$(pgbench_tps "$CONNECTIONS")
# The ceiling is the better of the two: the database at its best on these cores.
PG_TPS=$(python3 -c "print(max($PG_TPS_POOL, $PG_TPS_WIDE))")
ARGON=$("$TARGET_DIR/release/examples/argon2_rate" "$(nproc)" "$SECONDS_EACH" | awk '{print $NF}')

# Enumeration: an unknown email and a wrong password should cost the same.
time_logins() {
  for _ in $(seq 1 40); do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST "$BASE/api/v1/auth/token" \
      --data-urlencode "username=$1" --data-urlencode "password=not-the-password"
  done | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int(NR/2)+1]*1000}'
}
UNKNOWN_MS=$(time_logins "nobody-$(date +%s)@example.com")
WRONG_MS=$(time_logins "$ME_EMAIL")

echo
echo "| ceiling | value |"
echo "| --- | --- |"
echo "| pgbench -S -M prepared, 16 clients (the service's pool size), 1 thread | $PG_TPS_POOL tps |"
echo "| pgbench -S -M prepared, $CONNECTIONS clients, 1 thread | $PG_TPS_WIDE tps |"
echo "| raw argon2id verifications/s ($(nproc) threads) | $ARGON |"
echo
echo "| ratio | value | target |"
echo "| --- | --- | --- |"
python3 - "$ME_RPS" "$PG_TPS" "$LOGIN_RPS" "$ARGON" "$HEALTH_RPS" <<'PY'
import sys
me, pg, login, argon, health = map(float, sys.argv[1:])
print(f"| GET /users/me ÷ best pgbench -S | {me / pg:.0%} | ≥ 50% |")
print(f"| POST /auth/token ÷ raw argon2id | {login / argon:.0%} | within 10% (≥ 90%) |")
print(f"| GET /users/me ÷ GET /health | {me / health:.0%} | (context) |")
PY
echo
echo "Login latency, median of 40 sequential attempts: unknown email ${UNKNOWN_MS} ms, wrong password ${WRONG_MS} ms."

echo
echo "| executions (workers in the benchmark process, same database) | value |"
echo "| --- | --- |"
DATABASE_URL="$DB_URL" RUST_LOG=warn "$TARGET_DIR/release/examples/executions_bench" "${BENCH_EXECUTIONS:-20000}" "${BENCH_WORKERS:-32}"

# Inference: single sentences over HTTP from 1, 8 and 64 clients, against the
# engine's own batch-32 throughput on the same kind of sentence, same run.
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  echo
  echo "inference: skipped (no model in $MODEL_DIR; run task model-fetch)"
  exit 0
fi
for _ in $(seq 1 300); do
  curl -fs "$BASE/ready" | grep -q '"state":"ready"' && break
  sleep 0.1
done
MODEL=$(basename "$MODEL_DIR")
# The 32 texts of the engine's "batch 32 short" case (scripts/bench_texts.py
# mirrors embed_bench's generator), so that the batching efficiency below
# compares the same work; each request sends the next one.
SHORT_TEXTS=$(python3 -c 'import json, sys; sys.path.insert(0, "scripts"); import bench_texts
print(", ".join(json.dumps(text) for text in bench_texts.batch_texts(12)))')
cat >"$WORK/embed.lua" <<LUA
local texts = {$SHORT_TEXTS}
local next_text = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $USER_TOKEN"
request = function()
  next_text = next_text % #texts + 1
  local body = '{"model":"$MODEL","input":"' .. texts[next_text] .. '"}'
  return wrk.format(nil, "/api/v1/inference/embeddings", nil, body)
end
LUA
echo
echo "| POST /api/v1/inference/embeddings, one ~12-word sentence (the engine's short texts) per request | embeddings/s | p50 | p99 | notes"
echo "| --- | --- | --- | --- | ---"
declare -A EMBED_RPS
for clients in 1 8 64; do
  read -r rps p50 p99 rest <<<"$(load "$clients" -s "$WORK/embed.lua" "$BASE")"
  row "$clients client(s)" "$rps" "$p50" "$p99" "$rest"
  EMBED_RPS[$clients]=$rps
done
ENGINE_LINE=$("$TARGET_DIR/release/examples/embed_bench" "$INFERENCE_DEVICE" "$SECONDS_EACH" | grep 'batch 32 short')
ENGINE_RPS=$(sed -E 's/.*\): ([0-9.]+) sentences\/s.*/\1/' <<<"$ENGINE_LINE")
echo
echo "Engine alone, same run: $ENGINE_LINE"
python3 - "${EMBED_RPS[64]}" "$ENGINE_RPS" <<'PY'
import sys
http, engine = map(float, sys.argv[1:])
print(f"Batching efficiency at 64 clients (HTTP embeddings/s ÷ engine batch-32 sentences/s): {http / engine:.0%} (target ≥ 90%, issue 14)")
PY
