#!/usr/bin/env bash
# The cost report of issue 15: runs the fixed cases of examples/cost_cases.rs on the CUDA
# driver emulator with its cost counters on (MP_EMU_COST) and writes the table:
#
#   scripts/emu-profile.sh [OUTDIR]      # default bench/results/<today>-emulated
#
# OUTDIR/cost.md is the report; OUTDIR/raw/ keeps what it was made from: <case>.jsonl, the
# emulator's lines (one per launch, in launch order) and cases.log, the example's stdout
# with the marks that say which lines belong to the measured part of each case. Each case
# runs in its own process. Every figure is modelled (counted by the emulator), never a
# GPU measurement; the header of cost.md says so, and names the commit it was made from.
#
# Needs cargo and python3 (standard library only); builds the emulator first
# (scripts/build-emu.sh). CASES="a b" runs only those cases (`cost_cases list` names them).
# MP_EMU_CC picks the emulated capability (the emulator's default, 8.0, when unset); below
# 8.0 the bf16 GEMM cases are listed in the report as skipped (no bf16 tensor cores).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

date=$(date +%F)
out=${1:-bench/results/${date}-emulated}

emu=$(scripts/build-emu.sh)
cargo build --release --example cost_cases >&2
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in
  /*) ;;
  *) target_dir="$root/$target_dir" ;;
esac
bin="$target_dir/release/examples/cost_cases"

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# What the checkout held beyond the commit (nothing, from a clean checkout).
changes=$({ git status --porcelain --untracked-files=all 2>/dev/null || true; } | awk '{print $2}' |
  { grep -v "^${out%/}/" || true; } | tr '\n' ' ' | sed 's/ $//')
if [[ -n "$changes" ]]; then
  tree="uncommitted in the checkout: $changes"
else
  tree="clean checkout"
fi

raw="$out/raw"
rm -rf "$raw"
mkdir -p "$raw"
raw=$(cd "$raw" && pwd)
cases=${CASES:-$(LD_LIBRARY_PATH="$emu" "$bin" list | cut -f1)}

start=$(date +%s)
for c in $cases; do
  t0=$(date +%s%N)
  : >"$raw/$c.jsonl"
  if ! LD_LIBRARY_PATH="$emu" MP_EMU_COST="$raw/$c.jsonl" "$bin" "$c" >>"$raw/cases.log"; then
    echo "error: case $c failed (output in $raw/cases.log)" >&2
    exit 1
  fi
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%-28s %4d.%03d s of host time\n' "$c" $((ms / 1000)) $((ms % 1000)) >&2
done
echo "all cases: $(( $(date +%s) - start )) s of host time on the emulator" >&2

python3 scripts/cost_table.py "$out" --commit "$commit" --tree "$tree" --date "$date"
