#!/usr/bin/env bash
# CI's PTX gate, with the pinned nvcc:
#  1. regenerates the PTX and fails if cuda/ptx/ differs (stale vendored PTX, or a stale
#     resources.txt: ptxas's registers per kernel, which the CUDA driver emulator reads);
#  2. assembles every vendored PTX with ptxas and fails on any error: sm_75 and sm_80
#     PTX for sm_80 and sm_90, sm_90a PTX for sm_90a;
#  3. prints registers, stack and spills per kernel, and fails on any spill or stack
#     frame (local memory), which on these kernels always means a performance bug;
#  4. checks that the GEMM PTX uses tensor-core mma with f32 accumulators.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nvcc=${NVCC:-$("$root/scripts/install-nvcc.sh")}
ptxas="$(dirname "$nvcc")/ptxas"
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT

echo "== vendored PTX against nvcc $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
NVCC="$nvcc" "$root/scripts/vendor-ptx.sh" "$fresh" 2>/dev/null
if ! diff -r "$root/cuda/ptx" "$fresh" >/dev/null; then
  diff -r "$root/cuda/ptx" "$fresh" | head -n 40
  echo "error: cuda/ptx/ is stale; run scripts/vendor-ptx.sh and commit the result" >&2
  exit 1
fi
echo "cuda/ptx/ matches freshly compiled PTX"

echo "== ptxas"
printf '%-22s %-7s %-28s %5s %6s %7s %7s\n' file arch kernel regs stack spill_st spill_ld
bad=0
for ptx in "$root"/cuda/ptx/*.ptx; do
  file=$(basename "$ptx")
  target=${file%.ptx}; target=${target##*.}
  case "$target" in
    sm_90a) archs=(sm_90a) ;;
    *) archs=(sm_80 sm_90) ;;
  esac
  for arch in "${archs[@]}"; do
    if ! log=$("$ptxas" -arch="$arch" -v "$ptx" -o /dev/null 2>&1); then
      echo "$log" >&2
      echo "error: ptxas failed on $file for $arch" >&2
      bad=1
      continue
    fi
    # ptxas -v prints, per kernel: "Compiling entry function 'k'", then
    # "N bytes stack frame, N bytes spill stores, N bytes spill loads", "Used N registers".
    rows=$(awk -v file="$file" -v arch="$arch" '
      /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); k = substr($0, RSTART + 1, RLENGTH - 2) }
      /bytes stack frame/ { stack = $1; st = $5; ld = $9 }
      /Used [0-9]+ registers/ { match($0, /Used [0-9]+/); regs = substr($0, RSTART + 5, RLENGTH - 5);
                                printf "%-22s %-7s %-28s %5s %6s %7s %7s\n", file, arch, k, regs, stack, st, ld }
    ' <<<"$log")
    echo "$rows"
    if awk '$5 != 0 || $6 != 0 || $7 != 0 { found = 1 } END { exit !found }' <<<"$rows"; then
      echo "error: stack frame or spills in $file for $arch" >&2
      bad=1
    fi
  done
done
echo "== tensor cores"
# Every GEMM PTX must reach the tensor cores with f32 accumulators (wmma.mma ... .f32.f32).
for ptx in "$root"/cuda/ptx/gemm.*.ptx; do
  [[ -e "$ptx" ]] || continue
  count=$(grep -c 'wmma\.mma\.sync\.aligned\..*\.f32\.f32' "$ptx" || true)
  echo "$(basename "$ptx"): $count wmma.mma instructions with f32 accumulators"
  if [[ "$count" -eq 0 ]]; then
    echo "error: $(basename "$ptx") has no tensor-core mma with f32 accumulators" >&2
    bad=1
  fi
done
exit $bad
