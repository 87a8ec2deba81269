#!/usr/bin/env bash
# Writes the PTX that build.rs compiles with the pinned nvcc into a folder, cuda/ptx/ by
# default. The nvcc command line lives in build.rs alone: this script runs the build
# script with nvcc required and copies what it produced.
#
#   scripts/vendor-ptx.sh            refresh cuda/ptx/ (commit the result)
#   scripts/vendor-ptx.sh DIR        write into DIR instead (check-ptx.sh compares)
#
# It also writes resources.txt beside the PTX: the registers per thread ptxas gives each
# kernel for each architecture the PTX can be assembled for (from the PTX's own target up
# to sm_90). The CUDA driver emulator (emu/) reads it to refuse, as a GPU does, a launch
# whose block needs more registers than an SM has; check-ptx.sh's comparison of the whole
# folder keeps it current.
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

ptxas="$(dirname "$nvcc")/ptxas"
{
  echo "# Registers per thread, by ptxas $("$ptxas" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'): file arch kernel registers."
  echo "# Written by scripts/vendor-ptx.sh; read by the CUDA driver emulator (emu/src/driver/resources.rs)."
  for ptx in "$dest"/*.ptx; do
    file=$(basename "$ptx")
    target=${file%.ptx}; target=${target##*.}
    case "$target" in
      sm_75) archs=(sm_75 sm_80 sm_90) ;;
      sm_80) archs=(sm_80 sm_90) ;;
      *) archs=("$target") ;;
    esac
    for arch in "${archs[@]}"; do
      # ptxas -v prints "Compiling entry function 'k'" then "Used N registers" per kernel.
      "$ptxas" -arch="$arch" -v "$ptx" -o /dev/null 2>&1 | awk -v file="$file" -v arch="$arch" '
        /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); k = substr($0, RSTART + 1, RLENGTH - 2) }
        /Used [0-9]+ registers/ { match($0, /Used [0-9]+/); print file, arch, k, substr($0, RSTART + 5, RLENGTH - 5) }'
    done
  done | sort
} >"$dest/resources.txt"
echo "wrote $dest/resources.txt" >&2
