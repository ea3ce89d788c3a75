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
# With --device gpu (or DEVICE=gpu) Tessera runs on the GPU (f32, and f16 for
# bf16) with a fourth case of 256 passages, and its peers are PyTorch on CUDA in
# fp32 and in fp16 (ONNX Runtime's CPU build has no place there).
#
# Environment: DEVICE (cpu|gpu|auto, default cpu), SECONDS_PER_CASE (default 5)
# and ROUNDS for every engine; INFERENCE_MODEL_DIR for all; SKIP_PEERS=1 skips
# the peers. EMBED_BENCH names an embed_bench binary built elsewhere (nothing is
# then built), PEER_PYTHON a Python that already has the peers' packages.
# Otherwise the peers' virtualenv lives in .data/bench-venv (created once; PyPI's
# torch is the CUDA build, a one-time download of ~3 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --device) DEVICE=${2:?--device takes cpu, gpu or auto} ;;
  "") ;;
  *) echo "usage: bench-inference.sh [--device cpu|gpu|auto]" >&2; exit 2 ;;
esac

SECONDS_PER_CASE=${SECONDS_PER_CASE:-5}
ROUNDS=${ROUNDS:-2}
VENV=.data/bench-venv
mkdir -p .data
LOG=$(mktemp .data/bench-inference.XXXXXX)
trap 'rm -f "$LOG"' EXIT

MODEL_DIR=${INFERENCE_MODEL_DIR:-models/all-MiniLM-L6-v2}
[ -f "$MODEL_DIR/model.safetensors" ] || bash scripts/model-fetch.sh

if [ -n "${EMBED_BENCH:-}" ]; then
  BENCH=$EMBED_BENCH
else
  cargo build --release --example embed_bench
  BENCH="${CARGO_TARGET_DIR:-target}/release/examples/embed_bench"
fi
tessera() {
  INFERENCE_PRECISION=f32 "$BENCH" "${DEVICE:-cpu}" "$SECONDS_PER_CASE" | tee -a "$LOG"
  INFERENCE_PRECISION=bf16 "$BENCH" "${DEVICE:-cpu}" "$SECONDS_PER_CASE" | sed 's/^/tessera-bf16: /' | tee -a "$LOG"
}

if [ "${SKIP_PEERS:-0}" = "1" ]; then
  tessera
  echo "peers: skipped (SKIP_PEERS=1)"
  exit 0
fi

PYTHON=${PEER_PYTHON:-$VENV/bin/python}
if [ -z "${PEER_PYTHON:-}" ] && ! "$PYTHON" -c "import sentence_transformers, onnxruntime, onnx, onnxscript" 2>/dev/null; then
  echo "peers: installing sentence-transformers and onnxruntime into $VENV (once)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet sentence-transformers onnxruntime onnx onnxscript
fi

peers() {
  if [ "${DEVICE:-cpu}" = "gpu" ]; then
    "$PYTHON" scripts/bench_pytorch.py "$SECONDS_PER_CASE" --device cuda | tee -a "$LOG"
    "$PYTHON" scripts/bench_pytorch.py "$SECONDS_PER_CASE" --device cuda --fp16 | tee -a "$LOG"
  else
    "$PYTHON" scripts/bench_pytorch.py "$SECONDS_PER_CASE" --threads "$(nproc)" | tee -a "$LOG"
    "$PYTHON" scripts/bench_onnxruntime.py "$SECONDS_PER_CASE" --threads "$(nproc)" | tee -a "$LOG"
  fi
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS"
  tessera
  peers
done
python3 scripts/bench_ratios.py < "$LOG"
