#!/usr/bin/env bash
# Writes the PTX that build.rs compiles with the pinned nvcc into a folder, cuda/ptx/ by
# default. The nvcc command line lives in build.rs alone: this script runs the build
# script with nvcc required and copies what it produced.
#
#   scripts/vendor-ptx.sh            refresh cuda/ptx/ (commit the result)
#   scripts/vendor-ptx.sh DIR        write into DIR instead (check-ptx.sh compares)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$root/cuda/ptx}
nvcc=${NVCC:-$("$root/scripts/install-nvcc.sh")}

out_dir=$(
  cd "$root" &&
  NVCC="$nvcc" MIXED_PRECISION_REQUIRE_NVCC=1 cargo check --lib --quiet --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    pid = msg.get("package_id", "")
    # "path+file:///..#mixed-precision@0.1.0" (new cargo) or "mixed-precision 0.1.0 (...)"
    if msg.get("reason") == "build-script-executed" and ("#mixed-precision@" in pid or pid.startswith("mixed-precision ")):
        print(msg["out_dir"])
'
)
if [[ -z "$out_dir" || ! -d "$out_dir" ]]; then
  echo "error: could not find the build script's OUT_DIR" >&2
  exit 1
fi

mkdir -p "$dest"
rm -f "$dest"/*.ptx
cp "$out_dir"/*.ptx "$dest"/
ls "$dest"/*.ptx | sed "s|^|wrote |" >&2
