#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, over the bundle that
# scripts/gpu-bundle.sh built: prints nvidia-smi, runs every test executable with
# MIXED_PRECISION_REQUIRE_GPU=1 (so nothing passes by skipping), runs the kernel tests
# under compute-sanitizer (memcheck, then racecheck), runs the benches, the PyTorch
# side-by-side script (bench/pytorch/) and the examples,
# and writes one log per step into LOGDIR.
#
#   scripts/gpu-run.sh LOGDIR [STEP...]   STEP: tests sanitize benches pytorch pytorch-gpt2
#                                         examples shakespeare (default: tests sanitize
#                                         benches pytorch examples)
#   pytorch       the kernel checks and timings (step `pytorch`), then GPT-2 small
#                 (step `pytorch-gpt2`); `pytorch-gpt2` alone runs only the second.
#                 Both read LOGDIR/bench-train_step.log: run `benches` first.
#   examples      every example, the digits job again in bf16 and pure bf16, and the
#                 main job (train_shakespeare) in f16 and bf16 at its default size and
#                 briefly at GPT-2 small's shape; `shakespeare` runs only those three.
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
#   BENCHES       run only these benches (names, space-separated; default: all)
#   GPT2_STEP_TIMEOUT   the pytorch-gpt2 step's timeout (default STEP_TIMEOUT); each of
#                 its two torch.compile rows may take (GPT2_STEP_TIMEOUT - 60) / 2 s,
#                 compilation included (GPT2_COMPILE_TIMEOUT overrides), else "not run"
#
# Budget (estimates, not measurements, for an H100/H200; the first H200 run's figures
# are in bench/results/2026-12-04-h200/run1/gpu-run.log): the whole default run does
# not fit one 10-minute command (the gemm bench alone took 120 s per half, sanitize
# about 250 s), so split it across calls. The GPT-2 pieces fit one call, about 4-5
# minutes expected, under 9 at worst (the bench cut at 130 s, pytorch-gpt2 at 310 s,
# then no step starts after 420 s; the bench log must exist before pytorch-gpt2):
#   DEADLINE=420 STEP_TIMEOUT=120 GPT2_STEP_TIMEOUT=300 BENCHES=train_step scripts/gpu-run.sh LOG benches pytorch-gpt2 shakespeare
#   bench-train_step  18 s measured (Mlp rows) + about 40 s for GPT-2 small's four rows:
#                     each builds a 124M-parameter step (host init and upload, ~3 s) and
#                     runs 13 steps of 16 x 1024 tokens, ~14 TFLOP each, at the 100-200
#                     TFLOP/s our GEMM reached (0.1-0.15 s per step)
#   example-train_shakespeare, -bf16  about 5-10 s each: 1200 graph-replayed steps of a
#                     109k-parameter model (launch-bound, ~1 ms each), 12 evaluations,
#                     a 300-byte sample
#   example-train_shakespeare-gpt2-small  about 15-25 s: an 85M-parameter step (byte
#                     vocabulary), 50 steps of 8 x 1024 tokens (~5 TFLOP each, ~50 ms),
#                     one evaluation, 300 eager forwards for the sample
#   pytorch-gpt2      about 2-4 minutes: two eager rows (~10 s in all), then two
#                     torch.compile rows in child processes, each ~10 s of start-up,
#                     ~40-90 s of compilation (nanoGPT: "takes a ~minute") and ~2 s of
#                     steps; bounded by GPT2_STEP_TIMEOUT
set -uo pipefail

log=${1:?usage: scripts/gpu-run.sh LOGDIR [tests|sanitize|benches|pytorch|pytorch-gpt2|examples|shakespeare]...}
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
# The examples' data (the digits for train_digits and the tests, Tiny Shakespeare for
# the main job), wherever they run from: the bundle's copies, else the repository's.
data() { if [[ -f "$bundle/data/$1" ]]; then echo "$bundle/data/$1"; else echo "$root/examples/data/$1"; fi; }
MIXED_PRECISION_DIGITS=$(data digits.csv.gz)
MIXED_PRECISION_SHAKESPEARE=$(data tinyshakespeare.txt.gz)
export MIXED_PRECISION_DIGITS MIXED_PRECISION_SHAKESPEARE
# tests/capi.rs: the sources (header check) and the C program the bundle carries.
export MIXED_PRECISION_ROOT=$root
export MIXED_PRECISION_CAPI_C_BIN=$bundle/c/capi_test
# bench/pytorch/: the shared library the bundle carries.
export MIXED_PRECISION_LIB=$bundle/lib/libmixed_precision.so

step_timeout=${STEP_TIMEOUT:-240}
deadline=${DEADLINE:-0}
read -r -a bench_args <<<"${BENCH_ARGS:---warm-up-time 1 --measurement-time 2}"
per_half=" ${BENCH_PER_HALF-gemm} "
only_benches=" ${BENCHES:-} "
gpt2_timeout=${GPT2_STEP_TIMEOUT:-$step_timeout}
compile_timeout=${GPT2_COMPILE_TIMEOUT:-$(((gpt2_timeout - 60) / 2))}

passed=0
failed=0
failures=()
not_run=()
# step NAME COMMAND...: runs COMMAND under the step timeout (or $timeout_s, when set, for
# this call), its output in LOGDIR/NAME.log.
step() {
  local name=$1
  shift
  local limit=${timeout_s:-$step_timeout}
  if [[ $deadline -gt 0 && $SECONDS -ge $deadline ]]; then
    not_run+=("$name")
    echo "NOT RUN $name (deadline of $deadline s reached)"
    return
  fi
  local t0=$SECONDS
  if timeout --kill-after=10 "$limit" "$@" >"$log/$name.log" 2>&1; then
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

# The main job, train_shakespeare, from LOGDIR (its curves land beside its log), with
# --backend cuda so that a driver that fails to load fails the run instead of falling back
# to the CPU's emulation: f16 at the default size, bf16, and a short run at GPT-2 small's
# shape (12 x 12 x 768, 1024 tokens of context; the byte vocabulary) whose 340 MB of
# weights are deleted after it, so that LOGDIR stays small enough to copy back.
shakespeare_runs() {
  local main=$bundle/examples/train_shakespeare run
  if [[ ! -x "$main" ]]; then
    failed=$((failed + 1))
    failures+=("example-train_shakespeare (not in the bundle)")
    echo "FAIL example-train_shakespeare: $main is missing from the bundle"
    return
  fi
  for run in "$@"; do
    case "$run" in
      f16) step "example-train_shakespeare" bash -c 'cd "$1" && shift && exec "$@"' _ "$log" "$main" --backend cuda ;;
      bf16)
        step "example-train_shakespeare-bf16" bash -c 'cd "$1" && shift && exec "$@"' _ "$log" "$main" \
          --backend cuda --precision bf16 --out target/train_shakespeare_bf16 ;;
      gpt2-small)
        step "example-train_shakespeare-gpt2-small" bash -c \
          'cd "$1" && shift && "$@"; rc=$?; rm -f target/train_shakespeare_gpt2_small/model.safetensors; exit $rc' \
          _ "$log" "$main" --backend cuda --gpt2-small --steps 50 --batch 8 --out target/train_shakespeare_gpt2_small ;;
    esac
  done
}

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
        [[ -n "${BENCHES:-}" && "$only_benches" != *" $name "* ]] && continue
        if [[ "$per_half" == *" $name "* ]]; then
          for h in f16 bf16; do
            step "bench-$name-$h" env MIXED_PRECISION_BENCH_HALF="$h" CRITERION_HOME="${TMPDIR:-/tmp}/mp-criterion" \
              "$b" --bench "${bench_args[@]}"
          done
        else
          step "bench-$name" env CRITERION_HOME="${TMPDIR:-/tmp}/mp-criterion" "$b" --bench "${bench_args[@]}"
        fi
      done ;;
    pytorch | pytorch-gpt2)
      # PyTorch on the same GPU calling our kernels through the C ABI (issue 6, part 2),
      # then GPT-2 small in PyTorch AMP against benches/train_step.rs's rows (its own
      # step: torch.compile takes minutes; each compiled row runs under compile_timeout).
      if [[ "$s" == pytorch ]]; then
        step "pytorch" python3 "$root/bench/pytorch/side_by_side.py" --skip-gpt2 --out "$log/pytorch.md" \
          --ours-train-step "$log/bench-train_step.log"
      fi
      timeout_s=$gpt2_timeout step "pytorch-gpt2" python3 "$root/bench/pytorch/side_by_side.py" --gpt2-only \
        --compile-timeout "$compile_timeout" --out "$log/pytorch-gpt2.md" --ours-train-step "$log/bench-train_step.log" ;;
    examples)
      for e in "$bundle"/examples/*; do
        # The main job runs below, on the GPU or not at all (shakespeare_runs).
        [[ "$(basename "$e")" == train_shakespeare ]] && continue
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
      fi
      shakespeare_runs f16 bf16 gpt2-small ;;
    shakespeare)
      shakespeare_runs f16 bf16 gpt2-small ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done

echo "gpu-run: $passed passed, $failed failed${failures[*]:+ (${failures[*]})}, ${#not_run[@]} not run${not_run[*]:+ (${not_run[*]})}"
[[ $failed -eq 0 && ${#not_run[@]} -eq 0 ]]
