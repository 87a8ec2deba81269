#!/usr/bin/env bash
# Installs the pinned nvcc toolchain (PyPI wheels, see DESIGN.md) into the project-local,
# git-ignored .tools/nvcc, and prints the path of nvcc on stdout (progress goes to stderr):
#
#   NVCC=$(scripts/install-nvcc.sh) cargo build
#
# Idempotent: a second run with the same pins installs nothing. All five packages are
# pinned because nvcc's own requirements are not.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.tools/nvcc"
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85   # nv/target, which cuda_fp16.h includes
)
python=${PYTHON:-python3}

find_nvcc() {
  compgen -G "$venv/lib/python*/site-packages/nvidia/cu13/bin/nvcc" | head -n 1 || true
}

stamp="$venv/.pins"
nvcc=$(find_nvcc)
if [[ -n "$nvcc" && -x "$nvcc" && -f "$stamp" && "$(cat "$stamp")" == "${pins[*]}" ]]; then
  echo "$nvcc"
  exit 0
fi

echo "installing ${pins[*]} into $venv" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${pins[@]}" >&2
nvcc=$(find_nvcc)
if [[ -z "$nvcc" || ! -x "$nvcc" ]]; then
  echo "error: the wheels installed but no nvcc under $venv/lib/python*/site-packages/nvidia/cu13/bin" >&2
  exit 1
fi
"$nvcc" --version >&2
echo "${pins[*]}" > "$stamp"
echo "$nvcc"
