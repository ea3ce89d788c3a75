#!/usr/bin/env bash
# `task gpu-pack`: prepares .gpu/ for one run of scripts/gpu-run.sh on a lent GPU
# machine (the device tool's `run`, carrying ".gpu", with the command
# `bash scripts/gpu-run.sh`). That machine has PyTorch with CUDA but no Rust
# toolchain, no network and no Vulkan loader, and one call carries at most
# 64 MiB, so this builds here and packs small:
#   - embed_bench and the engine's test binary, release builds, xz-compressed;
#   - the model with its weights as f16 (scripts/gpu_model.py says why that is
#     enough), which gpu-run.sh widens back to f32;
#   - Debian's Vulkan loader (libvulkan1), which gpu-run.sh unpacks there;
#   - this checkout's path, where the test binary looks for its fixtures.
# BASELINE=REV also packs embed_bench built over revision REV's engine (with
# today's benchmark), which gpu-run.sh measures after the rest: an A/B of kernel
# changes in the same call.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.gpu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
MODEL_DIR=${INFERENCE_MODEL_DIR:-models/all-MiniLM-L6-v2}
rm -rf "$PACK"
mkdir -p "$PACK"

# Builds with `cargo "$@" --message-format=json` and prints the path of the
# executable of target kind $1 it made.
executable() {
  local kind=$1
  shift
  cargo "$@" --message-format=json | python3 -c '
import json, sys
messages = [json.loads(line) for line in sys.stdin]
print(next(m["executable"] for m in messages if m.get("executable") and m["target"]["kind"] == [sys.argv[1]]))
' "$kind"
}

[ -f "$MODEL_DIR/model.safetensors" ] || bash scripts/model-fetch.sh
if [ -n "${BASELINE:-}" ]; then
  TREE=$(mktemp -d)
  git worktree add --quiet --detach "$TREE" "$BASELINE"
  trap 'git worktree remove --force "$TREE"' EXIT
  cp examples/embed_bench.rs "$TREE/examples/"
  # A target directory of its own: cargo tells the two checkouts' builds apart
  # by the files' times, not their paths, and would take one's output for the other's.
  (cd "$TREE" && CARGO_TARGET_DIR=$CARGO_TARGET_DIR/gpu-baseline \
    executable example build --release --example embed_bench) |
    xargs -r xz -T0 -c >"$PACK/embed_bench_baseline.xz"
  git rev-parse --short "$BASELINE" >"$PACK/baseline"
fi
executable example build --release --example embed_bench | xargs -r xz -T0 -c >"$PACK/embed_bench.xz"
executable test test --release --test inference_engine --no-run | xargs -r xz -T0 -c >"$PACK/inference_engine.xz"

# numpy and safetensors: the benchmark's virtualenv has them once it exists.
PYTHON=.data/bench-venv/bin/python
if ! "$PYTHON" -c "import numpy, safetensors" 2>/dev/null; then
  PYTHON=.data/gpu-pack-venv/bin/python
  if ! "$PYTHON" -c "import numpy, safetensors" 2>/dev/null; then
    python3 -m venv .data/gpu-pack-venv
    .data/gpu-pack-venv/bin/pip install --quiet numpy safetensors
  fi
fi
"$PYTHON" scripts/gpu_model.py pack "$MODEL_DIR" "$PACK/model"

LISTS=$(mktemp -d)
mkdir -p "$LISTS/partial"
APT=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$LISTS")
apt-get "${APT[@]}" update -qq
(cd "$PACK" && apt-get "${APT[@]}" download libvulkan1 2>/dev/null)
rm -rf "$LISTS"

pwd >"$PACK/built-in"
SIZE=$(du -sm "$PACK" | cut -f1)
echo "packed $PACK: ${SIZE} MiB (a device call carries 64 MiB with the checkout)"
[ "$SIZE" -lt 60 ] || { echo "$PACK is too large for one device call" >&2; exit 1; }
