#!/usr/bin/env bash
# `task bench-inference`: the embedding engine's latency and throughput
# (examples/embed_bench.rs, release build), then the same three cases over the
# same texts on the same cores with its peers: PyTorch / sentence-transformers
# (scripts/bench_pytorch.py) and ONNX Runtime on an fp32 export of the same
# model (scripts/bench_onnxruntime.py), so all are measured in one run; last,
# Tessera's ratio to each peer (scripts/bench_ratios.py). Tessera runs twice,
# with f32 and with bf16 weights (INFERENCE_PRECISION), each printing its peak RSS.
#
# Every engine runs ROUNDS times (default 2), in turn, and the ratios compare each
# engine's best figures: the machine's speed drifts over minutes, and taking turns
# keeps one slow minute from landing on one engine alone.
#
# Environment: DEVICE (cpu|gpu|auto, default cpu), SECONDS_PER_CASE (default 5)
# and ROUNDS for every engine; INFERENCE_MODEL_DIR for all; SKIP_PEERS=1 skips
# the peers.
# Their virtualenv lives in .data/bench-venv (created once; PyPI's torch is the
# CUDA build, a one-time download of ~3 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_CASE=${SECONDS_PER_CASE:-5}
ROUNDS=${ROUNDS:-2}
VENV=.data/bench-venv
mkdir -p .data
LOG=$(mktemp .data/bench-inference.XXXXXX)
trap 'rm -f "$LOG"' EXIT

bash scripts/model-fetch.sh

cargo build --release --example embed_bench
BENCH="${CARGO_TARGET_DIR:-target}/release/examples/embed_bench"
tessera() {
  INFERENCE_PRECISION=f32 "$BENCH" "${DEVICE:-cpu}" "$SECONDS_PER_CASE" | tee -a "$LOG"
  INFERENCE_PRECISION=bf16 "$BENCH" "${DEVICE:-cpu}" "$SECONDS_PER_CASE" | sed 's/^/tessera-bf16: /' | tee -a "$LOG"
}

if [ "${SKIP_PEERS:-0}" = "1" ]; then
  tessera
  echo "peers: skipped (SKIP_PEERS=1)"
  exit 0
fi

if ! "$VENV/bin/python" -c "import sentence_transformers, onnxruntime, onnx, onnxscript" 2>/dev/null; then
  echo "peers: installing sentence-transformers and onnxruntime into $VENV (once)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet sentence-transformers onnxruntime onnx onnxscript
fi

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS"
  tessera
  "$VENV/bin/python" scripts/bench_pytorch.py "$SECONDS_PER_CASE" --threads "$(nproc)" | tee -a "$LOG"
  "$VENV/bin/python" scripts/bench_onnxruntime.py "$SECONDS_PER_CASE" --threads "$(nproc)" | tee -a "$LOG"
done
python3 scripts/bench_ratios.py < "$LOG"
