#!/usr/bin/env bash
# `task test-aarch64`: the kernel crate's tests built for aarch64 and run under
# qemu, so the NEON kernels are held to the same f64 reference as the x86 ones
# on a machine without an ARM CPU. Installs the cross linker and qemu (Debian
# packages) and the Rust target (rustup) on first use.
#
# With --if-available (CI), a machine that cannot install those says so in one
# line and the script stops there with success; tests that run and fail fail it.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
optional=false
[ "${1:-}" = "--if-available" ] && optional=true

unavailable() {
  if $optional; then
    echo "aarch64 kernel tests: not run, $1"
    exit 0
  fi
  echo "$1" >&2
  exit 1
}

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || unavailable "install gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user as root"
    sudo_cmd=(sudo)
  fi
  { "${sudo_cmd[@]}" apt-get update -qq \
    && "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; } >/dev/null \
    || unavailable "apt-get could not install gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user"
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >/dev/null 2>&1 \
  || unavailable "rustup could not add the $TARGET target"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo test --locked -p tessera-kernels --target "$TARGET"
