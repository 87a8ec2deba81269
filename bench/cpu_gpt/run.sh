#!/usr/bin/env bash
# The CPU fp32 GPT step against PyTorch's eager CPU step, side by side in one run (issue
# 20): `cargo bench --bench gpt_cpu` writes each case's weights and batch and times ours;
# bench/cpu_gpt/torch_step.py times PyTorch on the same ones; both use THREADS threads
# (default: every core; MATMUL_NUM_THREADS for our GEMMs, torch.set_num_threads).
#   bench/cpu_gpt/run.sh [OUT_DIR]    (PYTHON=python-with-torch, default python3)
# Writes OUT_DIR/gpt_cpu.md (default bench/results/<date>-cpu/) with the machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${1:-bench/results/$(date -u +%F)-cpu}
threads=${THREADS:-$(nproc)}
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
MATMUL_NUM_THREADS=$threads cargo bench --bench gpt_cpu -- "$work" | tee "$work/ours.txt"
"$python" bench/cpu_gpt/torch_step.py "$work" --threads "$threads" | tee "$work/torch.txt"
{
  echo "# CPU fp32 GPT training step: ours (Cpu::fp32) against PyTorch eager, same run"
  echo
  echo "Measured $(date -u '+%F %H:%M UTC') by bench/cpu_gpt/run.sh, $threads threads each."
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB;"
  echo "torch $("$python" -c 'import torch; print(torch.__version__)'), rustc $(rustc --version | cut -d' ' -f2)."
  echo "Host clock, $(grep -o 'RUNS: usize = [0-9]*' benches/gpt_cpu.rs | grep -o '[0-9]*$') timed steps after warm-up, median; random tokens; the same initial weights and batch on both sides."
  echo
  echo "| case | ours (s/step) | PyTorch (s/step) | ours tokens/s | PyTorch tokens/s | speed ratio (PyTorch time / ours) | first loss ours / PyTorch |"
  echo "|---|---|---|---|---|---|---|"
  join <(awk '{print $2, $4, $6, $8}' "$work/ours.txt" | sort) <(awk '{print $2, $4, $6, $8}' "$work/torch.txt" | sort) |
    awk '{printf "| %s | %.4f | %.4f | %s | %s | %.2f | %s / %s |\n", $1, $2, $5, $3, $6, $5 / $2, $4, $7}'
} | tee "$out/gpt_cpu.md"
