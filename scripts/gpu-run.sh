#!/usr/bin/env bash
# Runs on a lent GPU machine over what scripts/gpu-pack.sh left in .gpu/ (read it
# first): the engine's GPU tests (the tiny models against the naive reference,
# the real model against sentence-transformers' vectors, in f32 and f16), then
# `task bench-inference` on the GPU next to PyTorch on CUDA in fp32 and fp16.
# Everything it prints also goes to $OUT/gpu-run.log ($OUT is the device tool's
# folder that comes back; .gpu/out elsewhere). ROUNDS and SECONDS_PER_CASE pass
# on to the benchmark (default 2 and 3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-run.log") 2>&1

for deb in .gpu/*.deb; do dpkg -x "$deb" /; done
ldconfig
NVIDIA_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$NVIDIA_ICD" ] && export VK_DRIVER_FILES=$NVIDIA_ICD
nvidia-smi -L || true

WORK=$(mktemp -d)
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }
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

# A failing test still lets the benchmark run; the script's status reports it.
echo "== the engine's GPU tests"
TESTS=0
"$WORK/inference_engine" gpu --test-threads 1 --nocapture || TESTS=$?
echo "== task bench-inference on the GPU"
DEVICE=gpu EMBED_BENCH=$WORK/embed_bench PEER_PYTHON=${PEER_PYTHON:-python3} ROUNDS=${ROUNDS:-2} \
  SECONDS_PER_CASE=${SECONDS_PER_CASE:-3} bash scripts/bench-inference.sh
[ "$TESTS" = 0 ] || echo "the GPU tests FAILED (status $TESTS): see above"
exit "$TESTS"
