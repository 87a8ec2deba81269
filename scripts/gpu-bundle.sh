#!/usr/bin/env bash
# Builds, here, every release test, bench and example executable and copies them into a
# git-ignored folder (gpu-bundle/ by default) for the GPU machine, which has no Rust,
# with the examples' data (data/).
# Carry gpu-bundle.tar.xz and run scripts/gpu-run.sh there (README, "Running on a GPU").
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bundle=${1:-$root/gpu-bundle}
cd "$root"

# Prints "<kind> <name> <path>" for each executable cargo reports for this package.
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    pid = msg.get("package_id", "")
    if "#mixed-precision@" not in pid and not pid.startswith("mixed-precision "):
        continue
    t = msg["target"]
    print(t["kind"][0], t["name"], msg["executable"])
'
}

rm -rf "$bundle"
mkdir -p "$bundle/tests" "$bundle/benches" "$bundle/examples"
{
  cargo test --release --no-run --message-format=json
  cargo bench --features cublas --no-run --message-format=json
  cargo build --release --examples --message-format=json
} | executables | sort -u | while read -r kind name path; do
  case "$kind" in
    lib | test) dir=tests ;;
    bench) dir=benches ;;
    example) dir=examples ;;
    *) continue ;;
  esac
  cp "$path" "$bundle/$dir/$name"
  strip --strip-debug "$bundle/$dir/$name" 2>/dev/null || true
done

# The C ABI: the shared library for bench/pytorch/ (ctypes), and the C program of
# tests/capi.rs built here (the GPU machine may have no C compiler); running its test
# here checks the program builds and passes its no-driver checks.
# Both land in cargo's target folder: CARGO_TARGET_DIR's when set.
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release --lib
mkdir -p "$bundle/lib" "$bundle/c"
cp "$target_dir/release/libmixed_precision.so" "$bundle/lib/"
strip --strip-debug "$bundle/lib/libmixed_precision.so" 2>/dev/null || true
cargo test --release --test capi c_program
cp "$target_dir/tmp/capi_test" "$bundle/c/capi_test"
strip --strip-debug "$bundle/c/capi_test" 2>/dev/null || true

# The examples' data (train_digits, and train_shakespeare, the main job): gpu-run.sh
# points MIXED_PRECISION_DIGITS and MIXED_PRECISION_SHAKESPEARE here, so the examples find
# it from the log folder they run in, whatever copy of the repository came with them.
mkdir -p "$bundle/data"
cp examples/data/digits.csv.gz examples/data/tinyshakespeare.txt.gz "$bundle/data/"
for need in examples/train_shakespeare examples/train_digits benches/train_step data/tinyshakespeare.txt.gz; do
  [[ -f "$bundle/$need" ]] || { echo "error: the GPU bundle lacks $need" >&2; exit 1; }
done

# Never ship the CUDA driver emulator (emu/, target/emu/): on the GPU machine a
# libcuda.so.1 in the bundle would shadow the real driver and the "GPU" run would be an
# emulated one. Only this package's executables are copied above (the package_id filter)
# and target/emu/ is never read; this check keeps it so.
if find "$bundle" \( -name 'libcuda*' -o -name 'libmp_emu*' -o -name '*mp_emu*' \) | grep -q .; then
  find "$bundle" \( -name 'libcuda*' -o -name 'libmp_emu*' -o -name '*mp_emu*' \) >&2
  echo "error: the GPU bundle holds the CUDA driver emulator; it must never ship" >&2
  exit 1
fi

git rev-parse HEAD > "$bundle/COMMIT" 2>/dev/null || echo unknown > "$bundle/COMMIT"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then echo "(with uncommitted changes)" >> "$bundle/COMMIT"; fi
find "$bundle" -type f | sort >&2
du -sh "$bundle" >&2
# What to carry: the folder is over the device's 64 MiB carry limit (each executable
# holds the PTX), xz shrinks it about twelvefold. gpu-run.sh unpacks it with Python's
# tarfile (the GPU machine has python3, not necessarily xz).
tar -C "$bundle" -cf - . | xz -T0 -6 > "$bundle.tar.xz"
du -h "$bundle.tar.xz" >&2
