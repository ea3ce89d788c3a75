#!/usr/bin/env bash
# `task bench-inference`: the embedding engine's latency and throughput
# (examples/embed_bench.rs, release build), then the same three cases over the
# same texts with PyTorch / sentence-transformers (scripts/bench_pytorch.py) on
# the same cores, so both are measured in the same run.
#
# Environment: DEVICE (cpu|gpu|auto, default cpu) and SECONDS_PER_CASE (default 5)
# for the Rust bench; INFERENCE_MODEL_DIR for both; SKIP_PYTORCH=1 skips the
# baseline. The baseline's virtualenv lives in .data/bench-venv (created once).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_CASE=${SECONDS_PER_CASE:-5}
VENV=.data/bench-venv

bash scripts/model-fetch.sh

cargo run --release --example embed_bench -- "${DEVICE:-cpu}" "$SECONDS_PER_CASE"

if [ "${SKIP_PYTORCH:-0}" = "1" ]; then
  echo "pytorch: baseline skipped (SKIP_PYTORCH=1)"
  exit 0
fi

if ! "$VENV/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  echo "pytorch: installing sentence-transformers into $VENV (one-time download of ~3 GB: PyPI's torch is the CUDA build)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet sentence-transformers
fi

"$VENV/bin/python" scripts/bench_pytorch.py "$SECONDS_PER_CASE" --threads "$(nproc)"
