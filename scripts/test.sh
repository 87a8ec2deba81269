#!/usr/bin/env bash
# The README's test command: every test, with the GPU tests run on a GPU, never skipped.
#
#   scripts/test.sh [ARGS...]        ARGS go to `cargo test` (a filter, --test NAME, ...)
#
# With a real NVIDIA GPU (nvidia-smi lists one): MIXED_PRECISION_REQUIRE_GPU=1 cargo
# test --release ARGS on the real driver, then the emulator's own tests (CPU only).
#
# Without one: the GPU tests run on the emulator (emu/, a CPU implementation of the CUDA
# driver that executes our PTX; README, "The emulator"):
#   1. scripts/build-emu.sh builds it into target/emu/ (before any test: a build started
#      from inside a test would wait forever on cargo's lock);
#   2. the emulator's own tests (cargo test -p mp-emu --release);
#   3. the whole suite, CPU tests included, at compute capability 8.0 with target/emu first
#      on LD_LIBRARY_PATH and MIXED_PRECISION_REQUIRE_GPU=1 (a device that fails to open
#      fails the tests instead of skipping them);
#   4. at compute capability 7.5, the test targets whose kernels have PTX for a newer
#      target (cuda/ptx/<module>.sm_80.ptx: today the GEMM, whose sm_75 variant loads its
#      tiles without cp.async and has no bf16 kernels, so its bf16 tests check the refusal
#      (attention's too, which runs on the GEMM), and the other families with bf16 kernels
#      (elementwise, loss, embedding, layernorm, classifier), whose sm_75 variants round
#      bf16 with integer code and must give the bits the sm_80 ones give) and the C program
#      (tests/capi.rs), which calls the GEMM too. Every other module has sm_75 PTX only,
#      which pass 3 already ran. MP_TEST_CC75=all runs every test target here instead.
#      With ARGS, this pass runs ARGS again;
#   5. at compute capability 8.0 with MP_EMU_SM_COUNT=1, the test targets of the kernels
#      whose launchers size their grid from the SM count (those in src/kernels/ that call
#      grid_stride_config: today add, activation, adam, cast, embedding, unscale; the
#      embedding backward's loops over token buckets and positions stride by a grid sized
#      from the SM count too). At a real part's
#      count (108 at 8.0) most of the tests' sizes fit in one pass of the grid-stride
#      loop, so a wrong stride would never be used; at 1 SM (8 blocks of 256 threads)
#      their length sweeps take several passes. With ARGS, this pass runs ARGS again;
#   6. at compute capability 9.0, the bf16 tests (the filter `bf16`: every bf16 test has
#      it in its name) of the test targets whose kernels have bf16 variants (cuda/<module>.cu
#      mentions bf16), since issue 19 asks for bf16 at 8.0 and 9.0; the device then loads
#      the sm_80 PTX, as a Hopper GPU would. With ARGS, this pass runs ARGS again.
#
#   7. at compute capability 8.0 with the hardware error models (below), the targets that
#      reach the approximate instructions and the tensor cores through the optimizer and
#      the training steps (optim, train, gpt_cuda), which passes 4 and 6 do not run.
#      With ARGS, this pass runs ARGS again.
#
# Passes 4, 6 and 7 run the emulator's hardware error models (README, "The emulator"):
# MP_EMU_APPROX=bound moves every approximate instruction's result (ex2, rcp, div, sqrt,
# lg2) by the PTX ISA's maximum error, away from zero; MP_EMU_MMA=trunc adds wmma.mma's
# products as the tensor cores do, in blocks of 4 (sm_7x), 8 (sm_8x) or 16 (sm_9x) with
# alignment truncation (Fasi et al. 2021), instead of round-to-nearest in k order. Pass 3
# keeps the exact arithmetic, so every tolerance holds under both.
#
# Passes 4-6 run the blocks of every launch in another order than 0, 1, 2, ...
# (MP_EMU_BLOCK_ORDER=reverse at 7.5, scatter at 1 SM and at 9.0; emu/src/exec/order.rs):
# CUDA promises no block order, and a kernel that depended on the emulator's would give
# another answer there, even where no sanitizer looks.
#
# Every emulated pass runs with MP_EMU_STRICT=1: what the emulator finds and would only
# print (today: work on a non-blocking stream reading memory an unordered legacy-stream
# copy is still writing) fails the work with CUDA_ERROR_LAUNCH_FAILED instead, so no
# finding passes unread in a green run (README, "The emulator"). Its own tests set what
# they depend on themselves; they get it too, so they are shown to pass under it.
#
# --release because the GPU tests check against f64 references computed on the host: one
# 256x384x512 GEMM reference takes 7 s unoptimized and the GEMM sweep has 48 of them.
# CI runs the unoptimized `cargo test` (overflow checks, debug assertions) separately.
#
# --no-fail-fast: every test target runs, so one run lists every failure.
# Without ARGS, each emulated pass runs its test targets as separate `cargo test`
# processes, MP_TEST_JOBS (default: the host's cores) at a time, and prints each target's
# output whole once the pass is done (cargo_test_targets below): the same tests as one
# `cargo test` of the same selection, in less time.
# MP_TEST_DEVICE=gpu|emulator overrides the detection. Works from a fresh clone with only
# Rust installed (the C test program needs a C compiler, tests/capi.rs python3, as always).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

banner() { printf '\n==== scripts/test.sh: %s\n' "$*"; }

# LD_LIBRARY_PATH without any folder holding the emulator (target/emu of any checkout):
# the detection and the GPU mode must see the real driver only.
without_emulator() {
  local out="" dir
  local IFS=:
  for dir in ${LD_LIBRARY_PATH:-}; do
    [[ -z "$dir" ]] && continue
    if [[ "$dir" == */target/emu || "$dir" == */target/emu/ || "$dir" == target/emu || -e "$dir/libmp_emu.so" ]]; then
      continue
    fi
    out+="${out:+:}$dir"
  done
  printf '%s' "$out"
}
clean_ld_path=$(without_emulator)

mode=${MP_TEST_DEVICE:-auto}
gpu_line=""
if [[ "$mode" == auto ]]; then
  gpu_line=$(LD_LIBRARY_PATH="$clean_ld_path" nvidia-smi -L 2>/dev/null | grep -m1 '^GPU ' || true)
  if [[ -n "$gpu_line" ]]; then mode=gpu; else mode=emulator; fi
fi

args_text=${*:+ $*}
failures=()

# How many test targets an emulated pass runs at once (below). Within one test process
# the emulator runs one launch at a time (its driver state is behind one lock), and most
# test launches are one block on one host thread, so a single `cargo test` keeps about
# one core busy; test targets in separate processes use the others.
njobs=${MP_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}

# cargo_test_targets ENV... -- ARGS...: `cargo test --release --no-fail-fast ARGS` with
# the variables ENV, as up to $njobs processes at once, one per test target: builds
# everything ARGS select first (one cargo build), then runs each target (the library's
# unit tests, each --test target, the doc tests when ARGS select every target) as its own
# `cargo test`, the longest-running targets first so the others fill in beside them, and
# prints each target's output whole, in a fixed order, once all have run. ARGS are
# --test NAME selections and test-name filters, which apply to every target. Fails when
# any target fails.
cargo_test_targets() {
  local envs=() targets=() filters=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  while [[ $# -gt 0 ]]; do
    if [[ $1 == --test ]]; then targets+=("$2"); shift 2; else filters+=("$1"); shift; fi
  done
  local build=(cargo test --release --no-run)
  local units=()
  if [[ ${#targets[@]} -eq 0 ]]; then
    # The library and the test targets only: `cargo test` would build the examples too,
    # which no test runs (CI builds and runs them on their own, and its plain `cargo test`
    # compiles them): about 10 s of a fresh 2-core build.
    build+=(--lib --tests)
    units+=("--lib")
    for t in tests/*.rs; do units+=("--test $(basename "$t" .rs)"); done
    units+=("--doc")
  else
    for t in "${targets[@]}"; do build+=(--test "$t"); units+=("--test $t"); done
  fi
  env "${envs[@]}" "${build[@]}" || return 1
  # The targets that run longest on the emulator start first (measured: the GEMM sweeps,
  # the training steps); the two longest run as two processes each, every other test of
  # theirs in each (by exact name, from the target's --list), since one process runs
  # one launch at a time. The order and the split decide only when and where a test
  # runs, never what it checks; a target whose list cannot be read runs whole.
  local ordered=() taken=() f u k names
  listed() { local x y=$1; shift; for x in "$@"; do [[ $x == "$y" ]] && return 0; done; return 1; }
  for f in gemm train; do
    listed "--test $f" "${units[@]}" || continue
    taken+=("--test $f")
    if names=$(env "${envs[@]}" cargo test --release --test "$f" -- --list "${filters[@]}" 2>/dev/null) &&
      mapfile -t names < <(sed -n 's/: test$//p' <<<"$names") && [[ ${#names[@]} -gt 1 ]]; then
      local even=() odd=()
      for k in "${!names[@]}"; do
        if ((k % 2 == 0)); then even+=("${names[$k]}"); else odd+=("${names[$k]}"); fi
      done
      ordered+=("--test $f -- --exact ${even[*]}" "--test $f -- --exact ${odd[*]}")
    else
      ordered+=("--test $f")
    fi
  done
  for f in gpt_cuda adam attention; do
    listed "--test $f" "${units[@]}" && ordered+=("--test $f") && taken+=("--test $f")
  done
  for u in "${units[@]}"; do listed "$u" "${taken[@]}" || ordered+=("$u"); done
  local dir
  dir=$(mktemp -d)
  local i=0
  for u in "${ordered[@]}"; do
    while [[ $(jobs -rp | wc -l) -ge $njobs ]]; do wait -n || true; done
    # A half target names its tests exactly; any other unit takes the pass's filters.
    local more=("${filters[@]}")
    [[ $u == *" -- "* ]] && more=()
    # shellcheck disable=SC2086 # $u is the unit's selection, several words
    (env "${envs[@]}" cargo test --release --no-fail-fast $u "${more[@]}" >"$dir/$i.log" 2>&1; echo $? >"$dir/$i.rc") &
    i=$((i + 1))
  done
  wait
  local ok=0
  for ((k = 0; k < i; k++)); do
    cat "$dir/$k.log"
    [[ $(cat "$dir/$k.rc") == 0 ]] || { echo "---- target failed: ${ordered[$k]}"; ok=1; }
  done
  rm -rf "$dir"
  return $ok
}

# emulated ENV... -- ARGS...: an emulated pass: cargo_test_targets, or with the script's
# own ARGS (which may be any cargo test arguments) one plain `cargo test --release
# --no-fail-fast ARGS` with the variables ENV.
emulated() {
  if [[ $user_args -eq 0 ]]; then
    cargo_test_targets "$@"
    return
  fi
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" cargo test --release --no-fail-fast "$@"
}
user_args=$#
t_start=$SECONDS
# run NAME CMD...: runs a step, records a failure and goes on, so one summary lists all.
run() {
  local name=$1 t0=$SECONDS
  shift
  banner "$name"
  if "$@"; then
    echo "---- ok: $name ($((SECONDS - t0)) s)"
  else
    echo "---- FAILED: $name (exit $?, $((SECONDS - t0)) s)"
    failures+=("$name")
  fi
}

case "$mode" in
  gpu)
    banner "mode: real GPU${gpu_line:+ ($gpu_line)}; the real driver runs the GPU tests"
    run "cargo test --release$args_text, MIXED_PRECISION_REQUIRE_GPU=1, on the real GPU" \
      env LD_LIBRARY_PATH="$clean_ld_path" MIXED_PRECISION_REQUIRE_GPU=1 cargo test --release --no-fail-fast "$@"
    if [[ $# -eq 0 ]]; then
      run "the emulator's own tests (cargo test -p mp-emu --release; CPU only)" \
        env LD_LIBRARY_PATH="$clean_ld_path" MP_EMU_STRICT=1 cargo test -p mp-emu --release --no-fail-fast
    fi
    ;;
  emulator)
    if [[ "${MP_TEST_DEVICE:-auto}" == emulator ]]; then
      banner "mode: emulator (MP_TEST_DEVICE=emulator)"
    else
      banner "mode: emulator (nvidia-smi lists no GPU); the GPU tests run on the CUDA driver emulator, emu/"
    fi
    if [[ $# -eq 0 ]]; then
      # The emulator's library and its own tests in one cargo build, which keeps both
      # cores busy (the library alone is one crate, its unit-test build another as large):
      # about 10 s less than building the library first. build-emu.sh then finds it built;
      # a failure here shows again there and in the emulator's tests below.
      banner "building the emulator and its own tests (cargo test -p mp-emu --release --no-run)"
      cargo test -p mp-emu --release --no-run || true
    fi
    banner "building the emulator (scripts/build-emu.sh)"
    if ! emu_dir=$(scripts/build-emu.sh); then
      echo "error: the emulator did not build; no GPU test can run" >&2
      exit 1
    fi
    ls -l "$emu_dir"
    emu_path="$emu_dir${clean_ld_path:+:$clean_ld_path}"

    if [[ $# -eq 0 ]]; then
      run "the emulator's own tests (cargo test -p mp-emu --release)" \
        env LD_LIBRARY_PATH="$clean_ld_path" MP_EMU_STRICT=1 cargo test -p mp-emu --release --no-fail-fast
    fi

    run "cargo test --release$args_text, on the emulator at compute capability 8.0" \
      emulated LD_LIBRARY_PATH="$emu_path" MP_EMU_CC=8.0 MP_EMU_STRICT=1 MIXED_PRECISION_REQUIRE_GPU=1 -- "$@"

    if [[ $# -gt 0 ]]; then
      cc75=("$@")
    elif [[ "${MP_TEST_CC75:-}" == all ]]; then
      cc75=(--tests)
    else
      cc75=()
      for ptx in cuda/ptx/*.ptx; do
        file=$(basename "$ptx" .ptx) # <module>.<target>
        module=${file%.*}
        if [[ "${file##*.}" != sm_75 && -f "tests/$module.rs" ]] && [[ ! " ${cc75[*]} " == *" $module "* ]]; then
          cc75+=(--test "$module")
        fi
      done
      cc75+=(--test capi)
    fi
    run "cargo test --release ${cc75[*]}, on the emulator at compute capability 7.5, blocks in reverse order, hardware error models" \
      emulated LD_LIBRARY_PATH="$emu_path" MP_EMU_CC=7.5 MP_EMU_BLOCK_ORDER=reverse MP_EMU_APPROX=bound MP_EMU_MMA=trunc MP_EMU_STRICT=1 MIXED_PRECISION_REQUIRE_GPU=1 -- "${cc75[@]}"

    if [[ $# -gt 0 ]]; then
      sm1=("$@")
    else
      sm1=()
      for launcher in src/kernels/*.rs; do
        module=$(basename "$launcher" .rs)
        if [[ "$module" != mod && -f "tests/$module.rs" ]] && grep -q 'grid_stride_config(dev' "$launcher"; then
          sm1+=(--test "$module")
        fi
      done
    fi
    run "cargo test --release ${sm1[*]}, on the emulator at compute capability 8.0 with 1 SM, blocks scattered" \
      emulated LD_LIBRARY_PATH="$emu_path" MP_EMU_CC=8.0 MP_EMU_SM_COUNT=1 MP_EMU_BLOCK_ORDER=scatter MP_EMU_STRICT=1 MIXED_PRECISION_REQUIRE_GPU=1 -- "${sm1[@]}"

    if [[ $# -gt 0 ]]; then
      cc90=("$@")
    else
      cc90=()
      for cu in cuda/*.cu; do
        module=$(basename "$cu" .cu)
        if [[ -f "tests/$module.rs" ]] && grep -q bf16 "$cu"; then
          cc90+=(--test "$module")
        fi
      done
      cc90+=(bf16)
    fi
    run "cargo test --release ${cc90[*]}, on the emulator at compute capability 9.0, blocks scattered, hardware error models" \
      emulated LD_LIBRARY_PATH="$emu_path" MP_EMU_CC=9.0 MP_EMU_BLOCK_ORDER=scatter MP_EMU_APPROX=bound MP_EMU_MMA=trunc MP_EMU_STRICT=1 MIXED_PRECISION_REQUIRE_GPU=1 -- "${cc90[@]}"

    if [[ $# -gt 0 ]]; then
      models=("$@")
    else
      models=(--test optim --test train --test gpt_cuda)
    fi
    run "cargo test --release ${models[*]}, on the emulator at compute capability 8.0 with the hardware error models" \
      emulated LD_LIBRARY_PATH="$emu_path" MP_EMU_CC=8.0 MP_EMU_APPROX=bound MP_EMU_MMA=trunc MP_EMU_STRICT=1 MIXED_PRECISION_REQUIRE_GPU=1 -- "${models[@]}"
    ;;
  *)
    echo "error: MP_TEST_DEVICE=$mode: expected gpu or emulator" >&2
    exit 2
    ;;
esac

banner "summary: mode $mode, $((SECONDS - t_start)) s"
if [[ ${#failures[@]} -gt 0 ]]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
echo "all passed"
