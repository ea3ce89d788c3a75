#!/usr/bin/env bash
# Runs on a lent GPU machine over what scripts/gpu-pack.sh left in .gpu/ (read it
# first): the engine's GPU tests (the tiny models against the naive reference,
# the real model against sentence-transformers' vectors, in f32 and f16), then
# `task bench-inference` on the GPU next to PyTorch on CUDA in fp32 and fp16.
# With a baseline packed (BASELINE=REV), that revision's engine runs the same cases
# last. Everything it prints also goes to $OUT/gpu-run.log ($OUT is the device tool's
# folder that comes back; .gpu/out elsewhere). ROUNDS and SECONDS_PER_CASE pass
# on to the benchmark (default 2 and 3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"

unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }

run() {
  for deb in .gpu/*.deb; do dpkg -x "$deb" /; done
  ldconfig
  NVIDIA_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f "$NVIDIA_ICD" ] && export VK_DRIVER_FILES=$NVIDIA_ICD
  nvidia-smi -L || true

  WORK=$(mktemp -d)
  unxz .gpu/embed_bench.xz "$WORK/embed_bench"
  unxz .gpu/inference_engine.xz "$WORK/inference_engine"
  chmod +x "$WORK/embed_bench" "$WORK/inference_engine"
  python3 scripts/gpu_model.py unpack .gpu/model "$WORK/model"
  export INFERENCE_MODEL_DIR=$WORK/model XDG_RUNTIME_DIR=$WORK TESSERA_REQUIRE_GPU_AND_MODEL=1

  # The test binary reads its fixtures under the checkout it was built in.
  BUILT_IN=$(cat .gpu/built-in)
  if [ ! -e "$BUILT_IN" ]; then
    mkdir -p "$(dirname "$BUILT_IN")"
    ln -s "$PWD" "$BUILT_IN"
  fi

  # A failing step still lets the others run; the script's status reports it.
  local failed=0
  echo "== the engine's GPU tests"
  "$WORK/inference_engine" gpu --test-threads 1 --nocapture || failed=1
  echo "== task bench-inference on the GPU"
  DEVICE=gpu EMBED_BENCH=$WORK/embed_bench PEER_PYTHON=${PEER_PYTHON:-python3} ROUNDS=${ROUNDS:-2} \
    SECONDS_PER_CASE=${SECONDS_PER_CASE:-3} bash scripts/bench-inference.sh || failed=1
  if [ -f .gpu/embed_bench_baseline.xz ]; then
    echo "== the same cases over the engine of revision $(cat .gpu/baseline)"
    unxz .gpu/embed_bench_baseline.xz "$WORK/embed_bench_baseline"
    chmod +x "$WORK/embed_bench_baseline"
    for precision in f32 bf16; do
      INFERENCE_PRECISION=$precision "$WORK/embed_bench_baseline" gpu "${SECONDS_PER_CASE:-3}" || failed=1
    done
  fi
  [ "$failed" = 0 ] || echo "a step FAILED: see above"
  return "$failed"
}

# tee in the pipeline, not behind `exec`, so the log is whole when the script returns.
run 2>&1 | tee "$OUT/gpu-run.log"
exit "${PIPESTATUS[0]}"
