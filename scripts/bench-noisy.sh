#!/usr/bin/env bash
# `task bench-noisy` (also the last part of `task bench`): the noisy-neighbour
# benchmark. One user floods (maximum-size embeddings requests, event streams,
# execution submissions) while another sends single-sentence embeddings and
# `GET /users/me`; the victim's p50/p99 are compared with the same calls on the
# quiet service, in the same run. The service runs with its default limits:
# they are what is being measured.
#
# Uses its own PostgreSQL cluster under .data/bench-noisy-postgres.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${BENCH_SECONDS:-15}
PORT=${BENCH_NOISY_PORT:-18081}
BASE="http://127.0.0.1:$PORT"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# TESSERA_BIN=path/to/an/older/tessera measures that build instead, for a before/after.
BIN=${TESSERA_BIN:-$TARGET_DIR/release/tessera}
MODEL_DIR=${INFERENCE_MODEL_DIR:-models/all-MiniLM-L6-v2}
[ -f "$MODEL_DIR/model.safetensors" ] || { echo "noisy neighbour: skipped (no model in $MODEL_DIR; run task model-fetch)"; exit 0; }

cargo build --release --locked --bin tessera --example noisy_neighbour >&2
WORK=$(mktemp -d)
trap 'kill -TERM "${SERVER_PID:-0}" 2>/dev/null || true; wait "${SERVER_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

export APP_ENV=development LOCAL_POSTGRES_DIR=.data/bench-noisy-postgres HOST=127.0.0.1 PORT RUST_LOG=warn
export JWT_SECRET=bench-only-secret-0123456789abcdef0123456789
export INFERENCE_DEVICE=${INFERENCE_DEVICE:-cpu} INFERENCE_MODEL_DIR="$MODEL_DIR"
unset DATABASE_URL
"$BIN" serve >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 1 600); do curl -fs "$BASE/ready" 2>/dev/null | grep -q '"state":"ready"' && break; sleep 0.1; done
curl -fs "$BASE/ready" | grep -q '"state":"ready"' || { echo "the service did not become ready:" >&2; cat "$WORK/serve.err" >&2; exit 1; }

echo "Noisy neighbour, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), ${SECONDS_EACH}s quiet then ${SECONDS_EACH}s flooded, default limits, inference on $INFERENCE_DEVICE"
echo
"$TARGET_DIR/release/examples/noisy_neighbour" "$BASE" "$SECONDS_EACH" "$(basename "$MODEL_DIR")"
echo
echo "Server peak memory (VmHWM): $(awk '/VmHWM/ {print $2, $3}' "/proc/$SERVER_PID/status")"
