#!/usr/bin/env bash
# Builds the CUDA driver emulator (emu/, package mp-emu) in release and installs it as
# target/emu/libcuda.so.1 (its SONAME) with the link libcuda.so -> libcuda.so.1 (cudarc
# dlopens libcuda.so first, the C test program libcuda.so.1). Prints that folder on
# stdout (progress goes to stderr):
#
#   LD_LIBRARY_PATH=$(scripts/build-emu.sh) MP_EMU_CC=8.0 cargo test
#
# The folder is always <repository>/target/emu, whatever CARGO_TARGET_DIR says (cargo
# builds there; the copies land here, where the README and scripts/test.sh look).
# Never call this from inside a test: cargo would wait on its own build lock.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

cargo build --release -p mp-emu >&2

target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in
  /*) ;;
  *) target_dir="$root/$target_dir" ;;
esac
lib="$target_dir/release/libmp_emu.so"
if [[ ! -f "$lib" ]]; then
  echo "error: cargo built mp-emu but $lib is not there" >&2
  exit 1
fi

dest="$root/target/emu"
mkdir -p "$dest"
# Copy to a temporary name, then rename: a process that has the old library mapped keeps
# its copy, and nothing ever sees a half-written file.
cp "$lib" "$dest/.libcuda.so.1.tmp"
mv -f "$dest/.libcuda.so.1.tmp" "$dest/libcuda.so.1"
# libcuda.so must be a link, not a second copy: the dynamic loader shares one loaded
# library between two names only when they are the same file, and a process that opens
# both names (the C program dlopens libcuda.so.1, the crate inside it libcuda.so) would
# otherwise get two emulators with separate contexts and memory.
ln -sfn libcuda.so.1 "$dest/libcuda.so"
echo "$dest"
