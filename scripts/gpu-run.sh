#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, over the bundle that
# scripts/gpu-bundle.sh built: prints nvidia-smi, runs every test executable with
# MIXED_PRECISION_REQUIRE_GPU=1 (so nothing passes by skipping), runs the kernel tests
# under compute-sanitizer (memcheck, then racecheck), runs the benches, the PyTorch
# side-by-side script (bench/pytorch/) and the examples,
# and writes one log per step into LOGDIR.
#
#   scripts/gpu-run.sh LOGDIR [STEP...]   STEP: tests sanitize benches pytorch examples (default all)
#
# A lease is short (the device tool gives a session 15 minutes, 10 per command), so every
# step runs under `timeout` and none starts after the deadline; a step cut short is a
# FAIL with exit 124, one never started is listed as not run. Both are in the summary.
#   STEP_TIMEOUT  seconds one step may take (default 240)
#   DEADLINE      seconds after which no further step starts (default: none)
#   BENCH_ARGS    criterion options (default: 1 s warm-up, 2 s measurement per function;
#                 the tables the benches print are their own medians of CUDA-event times)
#   BENCH_PER_HALF  benches run once per half type, as steps bench-<name>-f16 and
#                 bench-<name>-bf16 (MIXED_PRECISION_BENCH_HALF), each with its own step
#                 timeout (default: gemm, whose f16 rows alone took 120 s on an H200); the
#                 other benches run their f16 and bf16 rows in one step, bench-<name>
set -uo pipefail

log=${1:?usage: scripts/gpu-run.sh LOGDIR [tests|sanitize|benches|pytorch|examples]...}
shift
steps=${*:-tests sanitize benches pytorch examples}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The real driver only: a folder holding the CUDA driver emulator (target/emu/, emu/) on
# the library path would shadow it and every "GPU" result would be an emulated one.
IFS=: read -r -a ld_dirs <<<"${LD_LIBRARY_PATH:-}"
for d in "${ld_dirs[@]}"; do
  if [[ -n "$d" && ( "$d" == *target/emu || "$d" == *target/emu/ || -e "$d/libmp_emu.so" ) ]]; then
    echo "LD_LIBRARY_PATH holds the CUDA driver emulator ($d): unset it; this script is for a real GPU" >&2
    exit 2
  fi
done
bundle=${BUNDLE:-$root/gpu-bundle}
if [[ ! -d "$bundle" && -f "$bundle.tar.xz" ]]; then
  python3 -m tarfile -e "$bundle.tar.xz" "$bundle" || { echo "cannot unpack $bundle.tar.xz" >&2; exit 2; }
fi
[[ -d "$bundle" ]] || { echo "no bundle at $bundle (build it with scripts/gpu-bundle.sh)" >&2; exit 2; }
sanitizer=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
mkdir -p "$log"
export MIXED_PRECISION_REQUIRE_GPU=1
# The digits data for the training example and tests, wherever they run from.
export MIXED_PRECISION_DIGITS=$root/examples/data/digits.csv.gz
# tests/capi.rs: the sources (header check) and the C program the bundle carries.
export MIXED_PRECISION_ROOT=$root
export MIXED_PRECISION_CAPI_C_BIN=$bundle/c/capi_test
# bench/pytorch/: the shared library the bundle carries.
export MIXED_PRECISION_LIB=$bundle/lib/libmixed_precision.so

step_timeout=${STEP_TIMEOUT:-240}
deadline=${DEADLINE:-0}
read -r -a bench_args <<<"${BENCH_ARGS:---warm-up-time 1 --measurement-time 2}"
per_half=" ${BENCH_PER_HALF-gemm} "

passed=0
failed=0
failures=()
not_run=()
step() {
  local name=$1
  shift
  if [[ $deadline -gt 0 && $SECONDS -ge $deadline ]]; then
    not_run+=("$name")
    echo "NOT RUN $name (deadline of $deadline s reached)"
    return
  fi
  local t0=$SECONDS
  if timeout --kill-after=10 "$step_timeout" "$@" >"$log/$name.log" 2>&1; then
    passed=$((passed + 1))
    echo "PASS $name ($((SECONDS - t0)) s)"
  else
    local rc=$?
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL $name (exit $rc, $((SECONDS - t0)) s); last lines of $log/$name.log:"
    tail -n 25 "$log/$name.log" | sed 's/^/    /'
  fi
}

{
  echo "commit: $(cat "$bundle/COMMIT" 2>/dev/null | tr '\n' ' ')"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
} >"$log/nvidia-smi.log" 2>&1
head -n 2 "$log/nvidia-smi.log"
grep -m1 -i "driver version" "$log/nvidia-smi.log" || true

# Kernel tests: the test executables named after a cuda/*.cu file.
kernel_tests=()
for cu in "$root"/cuda/*.cu; do
  stem=$(basename "$cu" .cu)
  [[ -x "$bundle/tests/$stem" ]] && kernel_tests+=("$stem")
done

for s in $steps; do
  case "$s" in
    tests)
      for t in "$bundle"/tests/*; do step "test-$(basename "$t")" "$t"; done ;;
    sanitize)
      for k in "${kernel_tests[@]}"; do
        step "memcheck-$k" "$sanitizer" --tool memcheck --error-exitcode 1 --leak-check full "$bundle/tests/$k"
        step "racecheck-$k" "$sanitizer" --tool racecheck --error-exitcode 1 "$bundle/tests/$k"
      done
      # The C program calls every kernel family through the C ABI on a foreign stream.
      step "memcheck-capi_test" "$sanitizer" --tool memcheck --error-exitcode 1 "$MIXED_PRECISION_CAPI_C_BIN"
      step "racecheck-capi_test" "$sanitizer" --tool racecheck --error-exitcode 1 "$MIXED_PRECISION_CAPI_C_BIN" ;;
    benches)
      for b in "$bundle"/benches/*; do
        name=$(basename "$b")
        if [[ "$per_half" == *" $name "* ]]; then
          for h in f16 bf16; do
            step "bench-$name-$h" env MIXED_PRECISION_BENCH_HALF="$h" CRITERION_HOME="${TMPDIR:-/tmp}/mp-criterion" \
              "$b" --bench "${bench_args[@]}"
          done
        else
          step "bench-$name" env CRITERION_HOME="${TMPDIR:-/tmp}/mp-criterion" "$b" --bench "${bench_args[@]}"
        fi
      done ;;
    pytorch)
      # PyTorch on the same GPU calling our kernels through the C ABI (issue 6, part 2).
      step "pytorch" python3 "$root/bench/pytorch/side_by_side.py" --out "$log/pytorch.md" \
        --ours-train-step "$log/bench-train_step.log" ;;
    examples)
      for e in "$bundle"/examples/*; do
        # Run inside LOGDIR so whatever an example writes (images) lands beside its log.
        # cost_cases takes the cases to run; on a GPU it is a fixed workload, run whole.
        args=()
        [[ "$(basename "$e")" == cost_cases ]] && args=(all)
        step "example-$(basename "$e")" bash -c 'cd "$1" && shift && exec "$@"' _ "$log" "$e" "${args[@]}"
      done
      # The main job again in bf16 and in pure bf16 (issue 19), each with its own curves.
      digits=$bundle/examples/train_digits
      if [[ -x "$digits" ]]; then
        step "example-train_digits-bf16" bash -c 'cd "$1" && shift && exec "$@"' _ "$log" "$digits" \
          --precision bf16 --out target/train_digits_bf16
        step "example-train_digits-pure-bf16" bash -c 'cd "$1" && shift && exec "$@"' _ "$log" "$digits" \
          --precision bf16 --weights pure --out target/train_digits_pure_bf16
      fi ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done

echo "gpu-run: $passed passed, $failed failed${failures[*]:+ (${failures[*]})}, ${#not_run[@]} not run${not_run[*]:+ (${not_run[*]})}"
[[ $failed -eq 0 && ${#not_run[@]} -eq 0 ]]
