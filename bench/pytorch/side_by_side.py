#!/usr/bin/env python3
"""PyTorch and mixed-precision on the same GPU, in the same run.

PyTorch is the other engine here: it owns the CUDA context, the stream and every
buffer, and calls our kernels through the C ABI (libmixed_precision.so, loaded with
ctypes) on its tensors' data_ptr() and its current stream. The script

1. checks our results against PyTorch's on the same inputs: the fp16 GEMM (every
   layout, f16/f32 output, bias + ReLU/GELU epilogue) against torch.matmul in fp32,
   the f32 -> f16 cast against .half() (bit for bit), the multi-tensor unscale against
   torch._amp_foreach_non_finite_check_and_unscale_ (bit for bit, found_inf too),
   update_scale against torch._amp_update_scale_, and multi-tensor AdamW against
   torch.optim.AdamW(fused=True) driven by a GradScaler, including its skipped step
   when found_inf is set; then the same in bf16: the bf16 GEMM (every layout, sm_80
   and newer; MP_ERR_UNSUPPORTED below) against torch.matmul in fp32 and in
   torch.bfloat16, f32 <-> bf16 against .bfloat16() / .float() (bit for bit), unscale
   on bf16 gradients (against torch's kernel where it takes bf16, else its formula in
   fp32), and AdamW(fused=True) on fp32 masters, no GradScaler (PyTorch's bf16
   convention), whose bf16 copies we write against the masters' .bfloat16();
2. times both sides (CUDA events, warm-up, median, random data, both in this process):
   the GEMM benchmark shapes (f16, and bf16 beside them), the unscale over a
   ~350M-parameter transformer's parameter list (f32 and bf16 gradients), the optimizer
   phase on that list (f16 with loss scaling, bf16 without), and the training step of
   the two Mlps of benches/train_step.rs (ours read from that bench's log of the same
   GPU run);
3. times GPT-2 small's training step in PyTorch AMP (nanoGPT's model, bench/pytorch/
   nanogpt.py; autocast f16 with GradScaler and bf16 without, fused AdamW; eager, and
   torch.compile'd in a child process under --compile-timeout, reported as "not run:
   why" when it fails or runs out of time) at the B and T of benches/train_step.rs, in
   tokens/s and MFU, next to our rows read from that bench's log;
4. prints the tables (markdown, with ratios) and writes them to --out.

Needs only python3 and torch (the GPU machine has both; nothing else is installed).
Without torch or a GPU it prints why and exits 0, or 1 under
MIXED_PRECISION_REQUIRE_GPU=1 (as the Rust GPU tests do). Any failed check exits 1.

    python3 bench/pytorch/side_by_side.py [--lib PATH] [--ours-train-step LOG] [--out FILE]
        [--skip-gpt2 | --gpt2-only] [--compile-timeout SECONDS]
"""

import argparse
import ctypes
import gc
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

WARMUP = 3
RUNS = 20

# ---------------------------------------------------------------------------------------
# The C ABI (include/mixed_precision.h), declared for ctypes.

MP_OK = 0
STATUS = {
    0: "MP_OK",
    1: "MP_ERR_INVALID_ARGUMENT",
    2: "MP_ERR_NULL_POINTER",
    3: "MP_ERR_MISALIGNED",
    4: "MP_ERR_NO_DRIVER",
    5: "MP_ERR_NO_DEVICE",
    6: "MP_ERR_CUDA",
    7: "MP_ERR_UNSUPPORTED",
    8: "MP_ERR_INTERNAL",
}
MP_F32, MP_F16, MP_BF16 = 0, 1, 2
MP_ERR_UNSUPPORTED = 7
ACT_NONE, ACT_RELU, ACT_GELU = 0, 1, 2

u64 = ctypes.c_uint64


class GemmArgs(ctypes.Structure):
    _fields_ = [
        ("m", u64),
        ("n", u64),
        ("k", u64),
        ("trans_a", ctypes.c_int32),
        ("trans_b", ctypes.c_int32),
        ("lda", u64),
        ("ldb", u64),
        ("ldc", u64),
        ("a", u64),
        ("b", u64),
        ("c", u64),
        ("c_dtype", ctypes.c_int),
        ("alpha", ctypes.c_float),
        ("beta", ctypes.c_float),
        ("bias", u64),
        ("bias_dtype", ctypes.c_int),
        ("pre", u64),
        ("activation", ctypes.c_int32),
        ("ab_dtype", ctypes.c_int32),
    ]


class AdamConfig(ctypes.Structure):
    _fields_ = [
        ("lr", ctypes.c_double),
        ("beta1", ctypes.c_double),
        ("beta2", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("weight_decay", ctypes.c_double),
        ("mode", ctypes.c_int32),
    ]


class AdamTensor(ctypes.Structure):
    _fields_ = [("params", u64), ("grads", u64), ("m", u64), ("v", u64), ("copy", u64), ("len", u64)]


# The functions this script calls, as the header declares them (tests/capi.rs checks
# these against include/mixed_precision.h).
SIGNATURES = {
    "mp_handle_create": [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)],
    "mp_handle_destroy": [ctypes.c_void_p],
    "mp_cast_f32_f16": [ctypes.c_void_p, u64, u64, u64],
    "mp_cast_f16_f32": [ctypes.c_void_p, u64, u64, u64],
    "mp_cast_f32_bf16": [ctypes.c_void_p, u64, u64, u64],
    "mp_cast_bf16_f32": [ctypes.c_void_p, u64, u64, u64],
    "mp_gemm": [ctypes.c_void_p, ctypes.POINTER(GemmArgs)],
    "mp_unscale_check_multi_f32": [
        ctypes.c_void_p,
        ctypes.POINTER(u64),
        ctypes.POINTER(u64),
        u64,
        u64,
        u64,
    ],
    "mp_unscale_check_multi_bf16": [
        ctypes.c_void_p,
        ctypes.POINTER(u64),
        ctypes.POINTER(u64),
        u64,
        u64,
        u64,
    ],
    "mp_adamw_step_multi_f32": [
        ctypes.c_void_p,
        ctypes.POINTER(AdamTensor),
        u64,
        u64,
        u64,
        u64,
        ctypes.POINTER(AdamConfig),
    ],
    "mp_adamw_step_multi_f32_bf16": [
        ctypes.c_void_p,
        ctypes.POINTER(AdamTensor),
        u64,
        u64,
        u64,
        u64,
        ctypes.POINTER(AdamConfig),
    ],
    "mp_adamw_step_multi_bf16": [
        ctypes.c_void_p,
        ctypes.POINTER(AdamTensor),
        u64,
        u64,
        u64,
        u64,
        ctypes.POINTER(AdamConfig),
    ],
    "mp_update_scale": [
        ctypes.c_void_p,
        u64,
        u64,
        u64,
        ctypes.c_double,
        ctypes.c_double,
        ctypes.c_int32,
    ],
}


class Library:
    """libmixed_precision.so with a handle on PyTorch's current context and stream."""

    def __init__(self, path, stream):
        self.lib = ctypes.CDLL(path)
        L = self.lib
        L.mp_last_error.restype = ctypes.c_char_p
        L.mp_last_error.argtypes = []
        for name, argtypes in SIGNATURES.items():
            f = getattr(L, name)
            f.argtypes = argtypes
            f.restype = ctypes.c_int
        h = ctypes.c_void_p()
        self.check("mp_handle_create", L.mp_handle_create(ctypes.c_void_p(stream), ctypes.byref(h)))
        self.h = h

    def check(self, what, status):
        if status != MP_OK:
            msg = self.lib.mp_last_error().decode(errors="replace")
            raise RuntimeError(f"{what}: {STATUS.get(status, status)}: {msg}")

    def call(self, name, *args):
        self.check(name, getattr(self.lib, name)(self.h, *args))

    def status(self, name, *args):
        """The call's status, for the checks that expect a refusal."""
        return getattr(self.lib, name)(self.h, *args)

    def close(self):
        self.check("mp_handle_destroy", self.lib.mp_handle_destroy(self.h))


class PtrList:
    """Host arrays of device pointers and lengths for the multi-tensor calls."""

    def __init__(self, tensors):
        self.count = len(tensors)
        self.ptrs = (u64 * self.count)(*[t.data_ptr() for t in tensors])
        self.lens = (u64 * self.count)(*[t.numel() for t in tensors])


class AdamList:
    def __init__(self, params, grads, ms, vs, copies):
        self.count = len(params)
        items = [
            AdamTensor(p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), c.data_ptr() if c is not None else 0, p.numel())
            for p, g, m, v, c in zip(params, grads, ms, vs, copies)
        ]
        self.array = (AdamTensor * self.count)(*items)


# ---------------------------------------------------------------------------------------
# Helpers.

failures = []


def expect(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def median_ms(torch, fn, warmup=WARMUP, runs=RUNS, reps=1):
    """Median milliseconds of fn() between CUDA events on the current stream. With
    reps > 1 each sample is reps back-to-back calls divided by reps, so that the host's
    launch cost (ctypes on our side, the dispatcher on torch's) overlaps the kernels
    as in a training loop; a single kernel is timed that way, a whole phase or step
    with reps=1 (its host work is part of its cost)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def same_bits(torch, a, b):
    """Bitwise equality, any NaN equal to any NaN."""
    ia, ib = a.view(torch.int16 if a.element_size() == 2 else torch.int32), b.view(
        torch.int16 if b.element_size() == 2 else torch.int32
    )
    both_nan = torch.isnan(a) & torch.isnan(b)
    return bool(((ia == ib) | both_nan).all())


def operands(torch, m, n, k, ta, tb, gen, device, dtype=None):
    """Random fp16 (or `dtype`) A and B as stored for the layout (A k x m when ta, B
    n x k when tb), and op(A), op(B) as views of them."""

    def stored(rows, cols):
        return (torch.rand(rows, cols, generator=gen, device=device) * 2 - 1).to(dtype or torch.float16)

    a = stored(k, m) if ta else stored(m, k)
    b = stored(n, k) if tb else stored(k, n)
    return a, b, (a.t() if ta else a), (b.t() if tb else b)


def mp_dtype(t):
    """The MpDtype of a tensor's element type."""
    return {"torch.float32": MP_F32, "torch.float16": MP_F16, "torch.bfloat16": MP_BF16}[str(t.dtype)]


def gemm_args(m, n, k, ta, tb, a, b, c, alpha=1.0, beta=0.0, bias=None, pre=None, act=ACT_NONE):
    return GemmArgs(
        m,
        n,
        k,
        ta,
        tb,
        a.shape[1],
        b.shape[1],
        c.shape[1],
        a.data_ptr(),
        b.data_ptr(),
        c.data_ptr(),
        mp_dtype(c),
        alpha,
        beta,
        bias.data_ptr() if bias is not None else 0,
        MP_F32 if bias is None else mp_dtype(bias),
        pre.data_ptr() if pre is not None else 0,
        act,
        mp_dtype(a),
    )


def transformer_shapes(d=1024, layers=24, vocab=50257, ctx=1024):
    """Parameter shapes of a GPT-2-medium-like transformer (~355M parameters)."""
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


# ---------------------------------------------------------------------------------------
# 1. Correctness against PyTorch.


def check_cast(torch, lib, dev, gen):
    print("cast")
    x = torch.randn(1 << 20, generator=gen, device=dev) * 3000
    x[:6] = torch.tensor([65519.0, 65520.0, -1e-8, 3e-8, float("nan"), float("-inf")], device=dev)
    y = torch.empty(x.numel(), dtype=torch.float16, device=dev)
    lib.call("mp_cast_f32_f16", x.data_ptr(), y.data_ptr(), x.numel())
    expect(same_bits(torch, y, x.half()), "f32 -> f16 equals .half() bit for bit (1M values incl. overflow, subnormals, NaN)")
    z = torch.empty_like(x)
    lib.call("mp_cast_f16_f32", y.data_ptr(), z.data_ptr(), y.numel())
    expect(same_bits(torch, z, y.float()), "f16 -> f32 equals .float() bit for bit")


def check_gemm(torch, lib, dev, gen):
    print("gemm (against torch.matmul in fp32 on the same fp16 inputs)")
    F = torch.nn.functional
    cases = [(256, 192, 320), (77, 50, 33), (1024, 1024, 1024)]
    for m, n, k in cases:
        for ta in (0, 1):
            for tb in (0, 1):
                a, b, opa, opb = operands(torch, m, n, k, ta, tb, gen, dev)
                ref = opa.float() @ opb.float()
                bias = torch.rand(n, generator=gen, device=dev) - 0.5
                for c_dtype, act in ((torch.float32, ACT_RELU), (torch.float16, ACT_GELU)):
                    c = torch.empty(m, n, dtype=c_dtype, device=dev)
                    pre = torch.empty(m, n, dtype=torch.float16, device=dev)
                    lib.call("mp_gemm", ctypes.byref(gemm_args(m, n, k, ta, tb, a, b, c, 1.0, 0.0, bias, pre, act)))
                    z = ref + bias
                    want = F.relu(z) if act == ACT_RELU else F.gelu(z, approximate="tanh")
                    scale = float(want.abs().max()) or 1.0
                    err = float((c.float() - want).abs().max()) / scale
                    pre_err = float((pre.float() - z).abs().max()) / (float(z.abs().max()) or 1.0)
                    # fp32 accumulation: only summation order differs in f32; the f16
                    # output adds one rounding (2^-11 relative).
                    tol = 1e-5 * math.sqrt(k) if c_dtype == torch.float32 else 1e-3
                    name = f"{m}x{n}x{k} {'NT'[ta]}{'NT'[tb]} {str(c_dtype)[6:]} out, bias+{'relu' if act == ACT_RELU else 'gelu'}"
                    expect(err <= tol and pre_err <= 1e-3, f"{name}: max error {err:.2e} of max |C| (tolerance {tol:.1e}), pre {pre_err:.2e}")


def check_unscale(torch, lib, dev, gen):
    print("unscale_check (against torch._amp_foreach_non_finite_check_and_unscale_)")
    shapes = [(1000,), (64, 33), (4096, 17), (3,)]
    grads = [torch.randn(*s, generator=gen, device=dev) * 65536 for s in shapes]
    scale = torch.full((), 65536.0, device=dev)
    for inject in (False, True):
        theirs = [g.clone() for g in grads]
        ours = [g.clone() for g in grads]
        if inject:
            theirs[2][5, 3] = ours[2][5, 3] = float("inf")
        found_t = torch.zeros((), device=dev)
        found_o = torch.zeros((), device=dev)
        # GradScaler's inverse: scale.double().reciprocal().float().
        torch._amp_foreach_non_finite_check_and_unscale_(theirs, found_t, scale.double().reciprocal().float())
        lst = PtrList(ours)
        lib.call("mp_unscale_check_multi_f32", lst.ptrs, lst.lens, lst.count, scale.data_ptr(), found_o.data_ptr())
        same = all(same_bits(torch, o, t) for o, t in zip(ours, theirs))
        expect(same and float(found_o) == float(found_t), f"{'with an inf' if inject else 'finite'}: gradients bit for bit, found_inf {float(found_o)} == {float(found_t)}")


def check_update_scale(torch, lib, dev):
    print("update_scale (against torch._amp_update_scale_)")
    s_t, s_o = torch.full((), 1024.0, device=dev), torch.full((), 1024.0, device=dev)
    g_t, g_o = torch.zeros((), dtype=torch.int32, device=dev), torch.zeros((), dtype=torch.int32, device=dev)
    pattern = [0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    ok = True
    for f in pattern:
        found = torch.full((), float(f), device=dev)
        torch._amp_update_scale_(s_t, g_t, found, 2.0, 0.5, 3)
        lib.call("mp_update_scale", s_o.data_ptr(), g_o.data_ptr(), found.data_ptr(), 2.0, 0.5, 3)
        ok &= float(s_t) == float(s_o) and int(g_t) == int(g_o)
    expect(ok, f"{len(pattern)} steps with overflows: scale and growth tracker equal after every step (final scale {float(s_o)})")


def check_adamw(torch, lib, dev, gen):
    print("adamw_step (against torch.optim.AdamW(fused=True) stepped by a GradScaler)")
    shapes = [(300, 70), (70,), (4099,)]
    lr, betas, eps, wd = 1e-3, (0.9, 0.999), 1e-8, 0.01
    params_t = [torch.nn.Parameter(torch.randn(*s, generator=gen, device=dev)) for s in shapes]
    params_o = [p.detach().clone().reshape(-1) for p in params_t]
    initial = [p.clone() for p in params_o]
    ms = [torch.zeros_like(p) for p in params_o]
    vs = [torch.zeros_like(p) for p in params_o]
    copies = [torch.empty(p.numel(), dtype=torch.float16, device=dev) for p in params_o]
    step = torch.zeros((), device=dev)
    grads = [torch.empty_like(p) for p in params_o]
    opt = torch.optim.AdamW(params_t, lr=lr, betas=betas, eps=eps, weight_decay=wd, fused=True)
    scaler = torch.amp.GradScaler("cuda", init_scale=1024.0, growth_interval=1000)
    scaler.scale(torch.ones((), device=dev))  # creates the scaler's device state
    cfg = AdamConfig(lr, betas[0], betas[1], eps, wd, 0)
    lst = AdamList(params_o, grads, ms, vs, copies)
    grad_list = PtrList(grads)
    found = torch.zeros((), device=dev)
    for it in range(6):
        overflow = it == 3
        for p, g in zip(params_t, grads):
            p.grad = (torch.randn(p.shape, generator=gen, device=dev) * scaler.get_scale()).reshape(p.shape)
            if overflow:
                p.grad.view(-1)[7] = float("nan")
            g.copy_(p.grad.reshape(-1))
        scale = torch.full((), scaler.get_scale(), device=dev)
        # PyTorch: the scaler checks, the fused kernel divides by the scale and skips on
        # found_inf, the scaler updates.
        scaler.step(opt)
        scaler.update()
        # Ours: check only (the AdamW kernel divides by the scale), step, update.
        found.zero_()
        lib.call("mp_unscale_check_multi_f32", grad_list.ptrs, grad_list.lens, grad_list.count, 0, found.data_ptr())
        lib.call("mp_adamw_step_multi_f32", lst.array, lst.count, step.data_ptr(), scale.data_ptr(), found.data_ptr(), ctypes.byref(cfg))
        # Differences measured against how far the weights have moved so far: a wrong
        # bias correction or decay shows as a percent of the update, rounding as 1e-5.
        moved = max(float((pt.detach().reshape(-1) - p0).abs().max()) for pt, p0 in zip(params_t, initial))
        worst = max(float((po - pt.detach().reshape(-1)).abs().max()) for po, pt in zip(params_o, params_t)) / max(moved, 1e-12)
        copies_ok = all(same_bits(torch, c, p.half()) for c, p in zip(copies, params_o))
        steps_t = float(opt.state[params_t[0]]["step"])
        expect(
            worst <= 1e-3 and copies_ok and float(step) == steps_t,
            f"step {it}{' (NaN gradient: skipped)' if overflow else ''}: worst difference {worst:.1e} of the largest move so far, fp16 copies {'==' if copies_ok else '!='} .half(), step count {float(step):.0f} == {steps_t:.0f}",
        )

# bf16: the same checks with bf16 operands, gradients and working copies.


def check_cast_bf16(torch, lib, dev, gen):
    print("cast bf16")
    x = torch.randn(1 << 20, generator=gen, device=dev) * 3000
    # Ties both ways, the largest finite f32 (rounds to inf), the largest bf16, an f32
    # subnormal, NaN, -inf.
    edge = [0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x7F7F0000, 0x00018000, 0x7FC00000, 0xFF800000]
    signed = [e - (1 << 32) if e >= 1 << 31 else e for e in edge]
    x[: len(edge)] = torch.tensor(signed, dtype=torch.int32, device=dev).view(torch.float32)
    y = torch.empty(x.numel(), dtype=torch.bfloat16, device=dev)
    lib.call("mp_cast_f32_bf16", x.data_ptr(), y.data_ptr(), x.numel())
    expect(same_bits(torch, y, x.bfloat16()), "f32 -> bf16 equals .bfloat16() bit for bit (1M values incl. ties, overflow, subnormals, NaN)")
    z = torch.empty_like(x)
    lib.call("mp_cast_bf16_f32", y.data_ptr(), z.data_ptr(), y.numel())
    expect(same_bits(torch, z, y.float()), "bf16 -> f32 equals .float() bit for bit")


def check_gemm_bf16(torch, lib, dev, gen):
    print("gemm bf16 (against torch.matmul in fp32 on the same bf16 inputs, and torch.matmul in torch.bfloat16)")
    F = torch.nn.functional
    if torch.cuda.get_device_capability() < (8, 0):
        a, b, _, _ = operands(torch, 64, 64, 64, 0, 0, gen, dev, torch.bfloat16)
        c = torch.empty(64, 64, dtype=torch.bfloat16, device=dev)
        status = lib.status("mp_gemm", ctypes.byref(gemm_args(64, 64, 64, 0, 0, a, b, c)))
        expect(status == MP_ERR_UNSUPPORTED, f"below sm_80 a bf16 GEMM is refused: {STATUS.get(status, status)}")
        return
    cases = [(256, 192, 320), (77, 50, 33), (1024, 1024, 1024)]
    for m, n, k in cases:
        for ta in (0, 1):
            for tb in (0, 1):
                a, b, opa, opb = operands(torch, m, n, k, ta, tb, gen, dev, torch.bfloat16)
                ref = opa.float() @ opb.float()
                bias = torch.rand(n, generator=gen, device=dev) - 0.5
                for c_dtype, act, bias_t in ((torch.float32, ACT_RELU, bias), (torch.bfloat16, ACT_GELU, bias.bfloat16())):
                    c = torch.empty(m, n, dtype=c_dtype, device=dev)
                    pre = torch.empty(m, n, dtype=torch.bfloat16, device=dev)
                    lib.call("mp_gemm", ctypes.byref(gemm_args(m, n, k, ta, tb, a, b, c, 1.0, 0.0, bias_t, pre, act)))
                    z = ref + bias_t.float()
                    want = F.relu(z) if act == ACT_RELU else F.gelu(z, approximate="tanh")
                    scale = float(want.abs().max()) or 1.0
                    err = float((c.float() - want).abs().max()) / scale
                    pre_err = float((pre.float() - z).abs().max()) / (float(z.abs().max()) or 1.0)
                    # fp32 accumulation: only summation order differs in f32; the bf16
                    # output adds one rounding (2^-9 relative).
                    tol = 1e-5 * math.sqrt(k) if c_dtype == torch.float32 else 4e-3
                    name = f"{m}x{n}x{k} {'NT'[ta]}{'NT'[tb]} {str(c_dtype)[6:]} out, {str(bias_t.dtype)[6:]} bias+{'relu' if act == ACT_RELU else 'gelu'}"
                    expect(err <= tol and pre_err <= 4e-3, f"{name}: max error {err:.2e} of max |C| (tolerance {tol:.1e}), pre {pre_err:.2e}")
                # torch's own bf16 GEMM (fp32 accumulation, one rounding to bf16): the
                # two may differ by the rounding of a differently ordered sum, 1 ulp.
                c = torch.empty(m, n, dtype=torch.bfloat16, device=dev)
                lib.call("mp_gemm", ctypes.byref(gemm_args(m, n, k, ta, tb, a, b, c)))
                theirs = torch.matmul(opa, opb)
                err = float((c.float() - theirs.float()).abs().max()) / (float(theirs.float().abs().max()) or 1.0)
                expect(err <= 2**-7, f"{m}x{n}x{k} {'NT'[ta]}{'NT'[tb]} bf16 out vs torch.matmul in bfloat16: max difference {err:.2e} of max |C| (tolerance {2**-7:.1e})")


def torch_unscale_bf16(torch, grads, found, inv):
    """torch._amp_foreach_non_finite_check_and_unscale_ on bf16 gradients where this
    torch's kernel takes them; else its formula (multiply by inv in fp32, round once,
    raise found on a non-finite gradient). Returns which ran."""
    try:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv)
        return "torch._amp_foreach_non_finite_check_and_unscale_"
    except RuntimeError as e:
        for g in grads:
            if not bool(torch.isfinite(g).all()):
                found.fill_(1.0)
            g.copy_((g.float() * inv).bfloat16())
        return f"its formula in fp32 (this torch's kernel refuses bf16: {str(e).splitlines()[0][:100]})"


def check_unscale_bf16(torch, lib, dev, gen):
    print("unscale_check bf16")
    shapes = [(1000,), (64, 33), (4096, 17), (3,)]
    grads = [(torch.randn(*s, generator=gen, device=dev) * 65536).bfloat16() for s in shapes]
    scale = torch.full((), 65536.0, device=dev)
    for inject in (False, True):
        theirs = [g.clone() for g in grads]
        ours = [g.clone() for g in grads]
        if inject:
            theirs[2][5, 3] = ours[2][5, 3] = float("inf")
        found_t = torch.zeros((), device=dev)
        found_o = torch.zeros((), device=dev)
        against = torch_unscale_bf16(torch, theirs, found_t, scale.double().reciprocal().float())
        lst = PtrList(ours)
        lib.call("mp_unscale_check_multi_bf16", lst.ptrs, lst.lens, lst.count, scale.data_ptr(), found_o.data_ptr())
        same = all(same_bits(torch, o, t) for o, t in zip(ours, theirs))
        expect(same and float(found_o) == float(found_t), f"{'with an inf' if inject else 'finite'}: bf16 gradients bit for bit against {against}, found_inf {float(found_o)} == {float(found_t)}")


def check_adamw_bf16(torch, lib, dev, gen):
    print("adamw_step with bf16 copies (against torch.optim.AdamW(fused=True) on fp32 masters, no GradScaler)")
    shapes = [(300, 70), (70,), (4099,)]
    lr, betas, eps, wd = 1e-3, (0.9, 0.999), 1e-8, 0.01
    params_t = [torch.nn.Parameter(torch.randn(*s, generator=gen, device=dev)) for s in shapes]
    params_o = [p.detach().clone().reshape(-1) for p in params_t]
    initial = [p.clone() for p in params_o]
    ms = [torch.zeros_like(p) for p in params_o]
    vs = [torch.zeros_like(p) for p in params_o]
    copies = [torch.empty(p.numel(), dtype=torch.bfloat16, device=dev) for p in params_o]
    step = torch.zeros((), device=dev)
    grads32 = [torch.empty_like(p) for p in params_o]
    grads16 = [torch.empty(p.numel(), dtype=torch.bfloat16, device=dev) for p in params_o]
    opt = torch.optim.AdamW(params_t, lr=lr, betas=betas, eps=eps, weight_decay=wd, fused=True)
    cfg = AdamConfig(lr, betas[0], betas[1], eps, wd, 0)
    list32 = AdamList(params_o, grads32, ms, vs, copies)
    list16 = AdamList(params_o, grads16, ms, vs, copies)
    for it in range(6):
        # Steps 0-2: bf16 gradients (a bf16 model's backward); 3-5: f32 gradients (fp32
        # parameters under autocast). torch sees the same values in fp32.
        bf16_grads = it < 3
        for p, g32, g16 in zip(params_t, grads32, grads16):
            g = torch.randn(p.shape, generator=gen, device=dev).reshape(-1)
            if bf16_grads:
                g16.copy_(g.bfloat16())
                g = g16.float()
            g32.copy_(g)
            p.grad = g.reshape(p.shape).clone()
        opt.step()
        if bf16_grads:
            lib.call("mp_adamw_step_multi_bf16", list16.array, list16.count, step.data_ptr(), 0, 0, ctypes.byref(cfg))
        else:
            lib.call("mp_adamw_step_multi_f32_bf16", list32.array, list32.count, step.data_ptr(), 0, 0, ctypes.byref(cfg))
        moved = max(float((pt.detach().reshape(-1) - p0).abs().max()) for pt, p0 in zip(params_t, initial))
        worst = max(float((po - pt.detach().reshape(-1)).abs().max()) for po, pt in zip(params_o, params_t)) / max(moved, 1e-12)
        # Our copies are our masters rounded (bit for bit); against torch's masters
        # rounded they can differ only where the two masters (equal up to rounding)
        # straddle a bf16 rounding boundary: rarely, and by one bf16 ulp.
        copies_ok = all(same_bits(torch, c, p.bfloat16()) for c, p in zip(copies, params_o))
        theirs = [pt.detach().reshape(-1).bfloat16() for pt in params_t]
        differ = sum(int((c.view(torch.int16) != t.view(torch.int16)).sum()) for c, t in zip(copies, theirs))
        one_ulp = all(bool(((c.float() - t.float()).abs() <= t.float().abs() * 2**-7).all()) for c, t in zip(copies, theirs))
        total = sum(p.numel() for p in params_o)
        steps_t = float(opt.state[params_t[0]]["step"])
        expect(
            worst <= 1e-3 and copies_ok and differ <= total // 1000 and one_ulp and float(step) == steps_t,
            f"step {it} ({'bf16' if bf16_grads else 'f32'} gradients): worst difference {worst:.1e} of the largest move so far, bf16 copies {'==' if copies_ok else '!='} our masters' .bfloat16(), {differ} of {total} differ from torch's masters' .bfloat16() ({'within' if one_ulp else 'NOT within'} 1 ulp), step count {float(step):.0f} == {steps_t:.0f}",
        )


# ---------------------------------------------------------------------------------------
# 2. Timings.


def time_gemm(torch, lib, dev, gen, dtype=None):
    """TFLOP/s of the benchmark shapes, operands and C in fp16 (or `dtype`)."""
    dtype = dtype or torch.float16
    rows = []
    cases = [(f"square {s} NT", s, s, s, 0, 1) for s in (1024, 2048, 4096, 8192)]
    batch, widths = 8192, [1024, 4096, 4096, 4096, 1024]
    for layer, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        cases += [
            (f"layer {layer} fwd {batch}x{fan_out}x{fan_in} NT", batch, fan_out, fan_in, 0, 1),
            (f"layer {layer} dgrad {batch}x{fan_in}x{fan_out} NN", batch, fan_in, fan_out, 0, 0),
            (f"layer {layer} wgrad {fan_out}x{fan_in}x{batch} TN", fan_out, fan_in, batch, 1, 0),
        ]
    for name, m, n, k, ta, tb in cases:
        a, b, opa, opb = operands(torch, m, n, k, ta, tb, gen, dev, dtype)
        c_ours = torch.empty(m, n, dtype=dtype, device=dev)
        c_torch = torch.empty(m, n, dtype=dtype, device=dev)
        args = gemm_args(m, n, k, ta, tb, a, b, c_ours)
        t_ours = median_ms(torch, lambda: lib.call("mp_gemm", ctypes.byref(args)), reps=10)
        t_torch = median_ms(torch, lambda: torch.matmul(opa, opb, out=c_torch), reps=10)
        flops = 2.0 * m * n * k
        rows.append((name, flops / t_ours / 1e9, flops / t_torch / 1e9, t_torch / t_ours))
    return rows


def count_params(shapes):
    n = sum(math.prod(s) for s in shapes)
    print(f"  transformer parameter list: {len(shapes)} tensors, {n / 1e6:.1f}M parameters")
    return n


def time_unscale(torch, lib, dev, gen, shapes, dtype=None):
    """Ours and torch's ms over the parameter list's gradients, f32 (or `dtype`: bf16,
    where torch's kernel takes it; else None for torch)."""
    dtype = dtype or torch.float32
    grads_o = [torch.randn(*s, generator=gen, device=dev).to(dtype) for s in shapes]
    grads_t = [g.clone() for g in grads_o]
    name = "mp_unscale_check_multi_bf16" if dtype == torch.bfloat16 else "mp_unscale_check_multi_f32"
    # Scale 1 on both sides: the same reads and writes as any scale, and repeated runs
    # leave the values alone.
    scale = torch.ones((), device=dev)
    inv = torch.ones((), device=dev)
    found_o, found_t = torch.zeros((), device=dev), torch.zeros((), device=dev)
    lst = PtrList(grads_o)
    t_ours = median_ms(torch, lambda: lib.call(name, lst.ptrs, lst.lens, lst.count, scale.data_ptr(), found_o.data_ptr()), reps=5)
    try:
        t_torch = median_ms(torch, lambda: torch._amp_foreach_non_finite_check_and_unscale_(grads_t, found_t, inv), reps=5)
    except RuntimeError:  # this torch's kernel refuses bf16
        t_torch = None
    return t_ours, t_torch


def torch_optimizer_phase(torch, dev, gen, shapes, cfg, scale0, half=None):
    """PyTorch AMP's phase: fp32 parameters with scaled fp32 gradients; GradScaler.step
    (foreach check, fused AdamW dividing by the scale and skipping on found_inf),
    update, and the fp16 copies autocast makes of every weight in the next forward.
    With half=torch.bfloat16, PyTorch's bf16 convention: no GradScaler (scale0 unused),
    the fused AdamW step and the bf16 copies. Returns its median ms and the flat
    parameters and gradients it started from."""
    bf16 = half == torch.bfloat16
    params = [torch.nn.Parameter(torch.randn(*s, generator=gen, device=dev) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=dev) * (1.0 if bf16 else scale0)
    start = ([p.detach().reshape(-1).clone() for p in params], [p.grad.reshape(-1).clone() for p in params])
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=True)
    scaler = torch.amp.GradScaler("cuda", init_scale=scale0, growth_interval=1 << 30)
    scaler.scale(torch.ones((), device=dev))  # creates the scaler's device state

    def phase():
        scaler.step(opt)
        scaler.update()
        return [p.half() for p in params]

    def phase_bf16():
        opt.step()
        return [p.bfloat16() for p in params]

    return median_ms(torch, phase_bf16 if bf16 else phase), start


def time_optimizer_phase(torch, lib, dev, gen, shapes):
    """Everything between backward and the next forward's GEMMs, both sides."""
    cfg = AdamConfig(1e-4, 0.9, 0.999, 1e-8, 0.01, 0)
    scale0 = 65536.0
    t_torch, (params_o, grads_o) = torch_optimizer_phase(torch, dev, gen, shapes, cfg, scale0)
    torch.cuda.empty_cache()
    # Ours on the same values: check-only pass, AdamW dividing by the scale and writing
    # the fp16 copies, update_scale.
    ms = [torch.zeros_like(p) for p in params_o]
    vs = [torch.zeros_like(p) for p in params_o]
    copies = [torch.empty(p.numel(), dtype=torch.float16, device=dev) for p in params_o]
    step, scale = torch.zeros((), device=dev), torch.full((), scale0, device=dev)
    found, tracker = torch.zeros((), device=dev), torch.zeros((), dtype=torch.int32, device=dev)
    lst, glist = AdamList(params_o, grads_o, ms, vs, copies), PtrList(grads_o)

    def our_phase():
        found.zero_()
        lib.call("mp_unscale_check_multi_f32", glist.ptrs, glist.lens, glist.count, 0, found.data_ptr())
        lib.call("mp_adamw_step_multi_f32", lst.array, lst.count, step.data_ptr(), scale.data_ptr(), found.data_ptr(), ctypes.byref(cfg))
        lib.call("mp_update_scale", scale.data_ptr(), tracker.data_ptr(), found.data_ptr(), 2.0, 0.5, 1 << 30)

    t_ours = median_ms(torch, our_phase)
    return t_ours, t_torch


def time_optimizer_phase_bf16(torch, lib, dev, gen, shapes):
    """The bf16 phase, both sides without loss scaling (PyTorch's bf16 convention): ours
    one AdamW writing the bf16 copies; PyTorch's fused AdamW and the bf16 casts."""
    cfg = AdamConfig(1e-4, 0.9, 0.999, 1e-8, 0.01, 0)
    t_torch, (params_o, grads_o) = torch_optimizer_phase(torch, dev, gen, shapes, cfg, 1.0, torch.bfloat16)
    torch.cuda.empty_cache()
    ms = [torch.zeros_like(p) for p in params_o]
    vs = [torch.zeros_like(p) for p in params_o]
    copies = [torch.empty(p.numel(), dtype=torch.bfloat16, device=dev) for p in params_o]
    step = torch.zeros((), device=dev)
    lst = AdamList(params_o, grads_o, ms, vs, copies)
    t_ours = median_ms(torch, lambda: lib.call("mp_adamw_step_multi_f32_bf16", lst.array, lst.count, step.data_ptr(), 0, 0, ctypes.byref(cfg)))
    return t_ours, t_torch


def torch_mlp(torch, widths, act):
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU() if act == "relu" else torch.nn.GELU(approximate="tanh"))
    return torch.nn.Sequential(*layers)


def time_torch_step(torch, dev, gen, widths, batch, act, graphs):
    """Median ms of a PyTorch AMP training step (autocast fp16, GradScaler, fused
    AdamW), the batch uploaded from host memory each step as ours does."""
    F = torch.nn.functional
    model = torch_mlp(torch, widths, act).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True, capturable=graphs)
    scaler = torch.amp.GradScaler("cuda")
    x_host = torch.rand(batch, widths[0]) * 2 - 1
    y_host = torch.randint(0, widths[-1], (batch,))

    def body(x, y):
        with torch.autocast("cuda", dtype=torch.float16, cache_enabled=not graphs):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    if not graphs:

        def eager():
            body(x_host.to(dev), y_host.to(dev))
            opt.zero_grad(set_to_none=True)

        return median_ms(torch, eager, warmup=5, runs=30)
    static_x, static_y = x_host.to(dev), y_host.to(dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            body(static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        body(static_x, static_y)

    def replay():
        static_x.copy_(x_host)
        static_y.copy_(y_host)
        graph.replay()

    return median_ms(torch, replay, warmup=5, runs=30)


def ours_train_step(log_path):
    """{model: (eager us, graph us)} from benches/train_step.rs's table."""
    out = {}
    if not log_path or not os.path.exists(log_path):
        return out
    pat = re.compile(r"^\| (\w+) \[[^\]]*\] \| (\d+) \| ([\d.]+) us \| ([\d.]+) us \|")
    with open(log_path) as f:
        for line in f:
            m = pat.match(line.strip())
            if m:
                out[m.group(1)] = (float(m.group(3)), float(m.group(4)))
    return out


# ---------------------------------------------------------------------------------------
# 3. GPT-2 small: PyTorch AMP's training step, eager and torch.compile'd, against ours
#    (benches/train_step.rs, read from its log of the same GPU run).

# The Rust bench's GPT_BATCH: both sides time 16 x 1024 tokens per step.
GPT2_BATCH = 16
GPT2_SPEC = dict(vocab=50257, padded_vocab=50304, context=1024, layers=12, heads=12, width=768)
# torch.compile compiles in the first call (the forward) and the first backward.
GPT2_WARMUP = 5
GPT2_RUNS = 20
HALVES = ("f16", "bf16")


def peak_half_flops(name):
    """The dense (no sparsity) f16/bf16 tensor-core peak of a device in FLOP/s by its
    name, and the product it is for; None for an unlisted device (MFU "n/a", never
    guessed). The same table as peak_half_flops in benches/common/mod.rs (keep them
    equal): H100 SXM5 ("NVIDIA H100 80GB HBM3") and H200 SXM ("NVIDIA H200") 989.4
    TFLOP/s, A100 (SXM4 and PCIe) 312; the PCIe and NVL boards of H100 and H200 and
    GH200 are not listed. Names are matched word by word ("GH200" is not "H200")."""
    words = re.split(r"[^A-Z0-9]+", name.upper())
    other_board = "NVL" in words or "PCIE" in words
    if "H200" in words and not other_board:
        return 989.4e12, "H200 SXM"
    if "H100" in words and ("HBM3" in words or "SXM5" in words) and not other_board:
        return 989.4e12, "H100 SXM5"
    if "A100" in words:
        return 312e12, "A100"
    return None


def torch_half(torch, name):
    return {"f16": torch.float16, "bf16": torch.bfloat16}[name]


def time_gpt2_step(torch, dev, half, compiled):
    """PyTorch AMP's GPT-2 small step as nanoGPT trains it: nanoGPT's model
    (bench/pytorch/nanogpt.py: SDPA attention, lm_head tied to wte, the loss over the
    50304 padded columns), fp32 parameters, autocast to `half` ("f16" with a GradScaler
    at its defaults, "bf16" without, PyTorch's convention), AdamW(fused=True) at
    PyTorch's defaults (ours: TrainConfig's), no clipping, the tokens uploaded from host
    memory each step, as ours are; with `compiled`, the model under torch.compile (default
    mode, as nanoGPT). Returns the median ms per step (CUDA events), the seconds of the
    first step (the compilation, when compiled) and the last loss."""
    sys.path.insert(0, HERE)
    import nanogpt

    torch.manual_seed(0)
    model = nanogpt.Gpt(GPT2_SPEC, padded_loss=True)
    nanogpt.init_weights(model, 1)
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True)
    dtype = torch_half(torch, half)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    forward = torch.compile(model) if compiled else model
    b, t = GPT2_BATCH, GPT2_SPEC["context"]
    gen = torch.Generator().manual_seed(2)
    seq = torch.randint(0, GPT2_SPEC["vocab"], (b * t + 1,), generator=gen)
    x_host, y_host = seq[:-1].view(b, t), seq[1:].view(b, t)
    last = []

    def step():
        x, y = x_host.to(dev), y_host.to(dev)
        with torch.autocast("cuda", dtype=dtype):
            loss = forward(x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        last[:] = [loss.detach()]

    started = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first_s = time.perf_counter() - started
    ms = median_ms(torch, step, warmup=GPT2_WARMUP - 1, runs=GPT2_RUNS)
    return ms, first_s, last[0].item()


def gpt2_worker(torch, half):
    """Run by the parent in a process of its own for a compiled row (so that a compile
    that fails, hangs or runs past --compile-timeout takes nothing else down): prints one
    line `gpt2_worker {json}`."""
    torch_settings(torch)
    ms, first_s, loss = time_gpt2_step(torch, torch.device("cuda"), half, compiled=True)
    print("gpt2_worker " + json.dumps({"ms": ms, "first_s": first_s, "loss": loss}), flush=True)
    return 0


def compiled_gpt2_row(half, timeout):
    """(ms, first_s, loss) of the compiled step in a child process, or (None, why)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--gpt2-worker", half]
    # A session of its own, so that on a timeout the child's compile workers die with it;
    # a SIGTERM to this script (gpu-run.sh's step timeout) takes the child down too.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def kill(*_):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    previous = signal.signal(signal.SIGTERM, lambda *a: (kill(), sys.exit(143)))
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill()
        p.communicate()
        return None, f"not run: the compiled step did not finish within {timeout:g} s (--compile-timeout), compilation included"
    finally:
        signal.signal(signal.SIGTERM, previous)
        kill()  # compile workers the child left behind
    for line in out.splitlines():
        if line.startswith("gpt2_worker "):
            r = json.loads(line[len("gpt2_worker ") :])
            return (r["ms"], r["first_s"], r["loss"]), None
    lines = [s.strip() for s in out.splitlines() if s.strip()]
    why = lines[-1][:160] if lines else "no output"
    return None, f"not run: the compiled run exited with status {p.returncode}: {why}"


def ours_gpt2(log_path):
    """{(half, mode): (batch, t, ms or None, cell)} from benches/train_step.rs's GPT-2
    small table; ms is None where the row says why it was not run (cell)."""
    out = {}
    if not log_path or not os.path.exists(log_path):
        return out
    pat = re.compile(r"^\| gpt2_small B=(\d+) T=(\d+) \| (f16|bf16) [^|]*\| (eager|graph) \| ([^|]*)\|")
    with open(log_path) as f:
        for line in f:
            m = pat.match(line.strip())
            if m:
                cell = m.group(5).strip()
                ms = re.fullmatch(r"([\d.]+) ms", cell)
                out[(m.group(3), m.group(4))] = (int(m.group(1)), int(m.group(2)), float(ms.group(1)) if ms else None, cell)
    return out


def gpt2_section(torch, dev, args):
    """Times PyTorch's rows, reads ours, and returns the section's markdown lines."""
    sys.path.insert(0, HERE)
    import nanogpt

    b, t = GPT2_BATCH, GPT2_SPEC["context"]
    tokens = b * t
    with torch.device("meta"):
        fpt = nanogpt.flops_per_token(nanogpt.Gpt(GPT2_SPEC, padded_loss=True), t)
    name = torch.cuda.get_device_name()
    peak = peak_half_flops(name)
    bf16_ok = torch.cuda.get_device_capability() >= (8, 0)

    def rate(ms):
        per_s = tokens / (ms / 1e3)
        mfu = f"{100 * fpt * per_s / peak[0]:.1f}%" if peak else "n/a"
        return f"{ms:.2f} | {per_s:.0f} | {mfu}"

    rows = {}  # (half, "eager" | "compiled") -> markdown cells
    times = {}
    for half in HALVES:
        if half == "bf16" and not bf16_ok:
            for mode in ("eager", "compiled"):
                rows[(half, mode)] = "not run: no bf16 tensor cores below sm_80 | | |"
            continue
        print(f"  gpt2 small {half} eager ...", flush=True)
        try:
            ms, _, loss = time_gpt2_step(torch, dev, half, compiled=False)
            times[("torch", half, "eager")] = ms
            rows[(half, "eager")] = rate(ms) + f" | loss {loss:.3f}"
        except Exception as e:  # out of memory on a small GPU, say: report it, go on
            rows[(half, "eager")] = f"not run: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | |"
        gc.collect()
        torch.cuda.empty_cache()
        print(f"  gpt2 small {half} torch.compile (limit {args.compile_timeout:.0f} s) ...", flush=True)
        r, why = compiled_gpt2_row(half, args.compile_timeout)
        if r:
            ms, first_s, loss = r
            times[("torch", half, "compiled")] = ms
            rows[(half, "compiled")] = rate(ms) + f" | loss {loss:.3f}; compilation and first step {first_s:.0f} s"
        else:
            rows[(half, "compiled")] = why + " | | |"

    ours = ours_gpt2(args.ours_train_step)
    out = ["", f"## GPT-2 small training step, B={b} x T={t} ({tokens} tokens per step)", ""]
    out.append(
        "PyTorch AMP: nanoGPT's model (bench/pytorch/nanogpt.py: SDPA attention, lm_head tied to wte, the loss over "
        "the 50304 padded columns as nanoGPT trains GPT-2), fp32 parameters, autocast f16 with a GradScaler or bf16 "
        "without, AdamW(fused=True) at PyTorch's defaults, no clipping, eager or torch.compile (default mode) of the "
        "model; cuBLAS's f16 reduced-precision reductions off (fp32 accumulation, as ours; as in the checks above); "
        f"tokens uploaded from host memory each step. Median of {GPT2_RUNS} steps after {GPT2_WARMUP} warm-up "
        "steps, CUDA events. Ours: TrainConfig::f16() (loss scaling) and ::bf16() (none), the same AdamW settings, "
        "eager and CUDA-graph replay, from benches/train_step.rs's log of this run (its own CUDA-event medians)."
    )
    if peak:
        out.append(
            f"MFU = {fpt / 1e9:.3f} GFLOP per token (6 N + 12 L C T) x tokens/s / {peak[0] / 1e12:.1f} TFLOP/s, the "
            f"dense f16/bf16 tensor-core peak of the {peak[1]} (device: {name})."
        )
    else:
        out.append(f"MFU n/a: no known dense f16/bf16 peak for {name!r} (peak_half_flops lists H100 SXM5, H200 SXM, A100).")
    out += ["", "| step | precision | ms per step | tokens/s | MFU | notes |", "|---|---|---|---|---|---|"]
    for half in HALVES:
        out.append(f"| PyTorch AMP eager | {half} | {rows[(half, 'eager')]} |")
        out.append(f"| PyTorch AMP torch.compile | {half} | {rows[(half, 'compiled')]} |")
        for mode, label in (("eager", "ours eager"), ("graph", "ours CUDA graph")):
            o = ours.get((half, mode))
            if o is None:
                out.append(f"| {label} | {half} | not in {args.ours_train_step or '(no --ours-train-step log)'} | | | |")
            elif (o[0], o[1]) != (b, t):
                out.append(f"| {label} | {half} | at B={o[0]} T={o[1]}, not this B and T: not compared | | | |")
            elif o[2] is None:
                out.append(f"| {label} | {half} | {o[3]} | | | |")
            else:
                times[("ours", half, mode)] = o[2]
                out.append(f"| {label} | {half} | {rate(o[2])} | |")
    out += ["", "Ratio = PyTorch's time per step / ours (> 1: ours faster):", ""]
    out += ["| precision | ours graph vs PyTorch eager | ours graph vs PyTorch compiled | ours eager vs PyTorch eager |", "|---|---|---|---|"]

    def ratio(half, theirs, mine):
        a, c = times.get(("torch", half, theirs)), times.get(("ours", half, mine))
        return f"{a / c:.2f}" if a and c else "n/a"

    for h in HALVES:
        out.append(f"| {h} | {ratio(h, 'eager', 'graph')} | {ratio(h, 'compiled', 'graph')} | {ratio(h, 'eager', 'eager')} |")
    return out


def torch_settings(torch):
    """fp32 accumulation in cuBLAS's f16 GEMMs (ours accumulate in fp32), no TF32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False


# ---------------------------------------------------------------------------------------


def no_gpu(why):
    required = os.environ.get("MIXED_PRECISION_REQUIRE_GPU") == "1"
    print(f"side_by_side: {why}; nothing was run. This script runs on a machine with a CUDA GPU and PyTorch (scripts/gpu-run.sh).")
    if required:
        print("side_by_side: MIXED_PRECISION_REQUIRE_GPU=1, so that is a failure", file=sys.stderr)
    return 1 if required else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default=os.environ.get("MIXED_PRECISION_LIB", os.path.join(ROOT, "target", "release", "libmixed_precision.so")))
    ap.add_argument("--ours-train-step", help="log of benches/train_step.rs from the same GPU run")
    ap.add_argument("--out", help="write the tables (markdown) here too")
    ap.add_argument("--skip-timings", action="store_true", help="correctness checks only")
    gpt2 = ap.add_mutually_exclusive_group()
    gpt2.add_argument("--skip-gpt2", action="store_true", help="leave out the GPT-2 small section")
    gpt2.add_argument("--gpt2-only", action="store_true", help="only the GPT-2 small section (needs no --lib)")
    ap.add_argument("--compile-timeout", type=float, default=300.0, help="seconds each torch.compile row may take, compilation included (default 300)")
    ap.add_argument("--gpt2-worker", choices=HALVES, help=argparse.SUPPRESS)
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        return no_gpu("PyTorch is not installed")
    if not torch.cuda.is_available():
        return no_gpu("PyTorch sees no CUDA GPU")
    if args.gpt2_worker:
        return gpt2_worker(torch, args.gpt2_worker)
    if not args.gpt2_only and not os.path.exists(args.lib):
        print(f"side_by_side: {args.lib} not found: build it with `cargo build --release --lib` (or scripts/gpu-bundle.sh)", file=sys.stderr)
        return 1

    dev = torch.device("cuda")
    torch_settings(torch)
    torch.cuda.init()
    torch.zeros(1, device=dev)  # makes the primary context current on this thread
    name = torch.cuda.get_device_name()
    header = f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, {time.strftime('%Y-%m-%d')}"
    if args.gpt2_only:
        print(f"side_by_side: {header}; GPT-2 small only")
        print("\n## Timings")
        out = [f"# PyTorch side by side, GPT-2 small: {header}"] + gpt2_section(torch, dev, args)
        return finish(out, args)
    lib = Library(args.lib, torch.cuda.current_stream().cuda_stream)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    print(f"side_by_side: {header}; library {args.lib}")

    print("\n## Checks against PyTorch (our kernels on PyTorch's tensors and stream)")
    check_cast(torch, lib, dev, gen)
    check_gemm(torch, lib, dev, gen)
    check_unscale(torch, lib, dev, gen)
    check_update_scale(torch, lib, dev)
    check_adamw(torch, lib, dev, gen)
    check_cast_bf16(torch, lib, dev, gen)
    check_gemm_bf16(torch, lib, dev, gen)
    check_unscale_bf16(torch, lib, dev, gen)
    check_adamw_bf16(torch, lib, dev, gen)
    torch.cuda.synchronize()

    out = [f"# PyTorch side by side: {header}", ""]
    out.append(f"Checks against PyTorch: {'all passed' if not failures else 'FAILED: ' + '; '.join(failures)}.")
    out.append("")
    if not args.skip_timings:
        out.append(f"Median of {RUNS} runs after {WARMUP} warm-up runs (training steps: 30 after 5), CUDA events, random data; both sides in one process on one stream. Ratio = PyTorch time / our time (> 1: ours faster). Single kernels: 10 (GEMM) or 5 (unscale) back-to-back calls per sample; the optimizer phase and the training step: one per sample, host work included.")
        out.append("")
        print("\n## Timings")
        print("  gemm ...", flush=True)
        rows = time_gemm(torch, lib, dev, gen)
        out += ["## GEMM, f16 in, f16 out, fp32 accumulation", "", "| shape (m x n x k) | ours TFLOP/s | torch.matmul TFLOP/s | ratio |", "|---|---|---|---|"]
        out += [f"| {n} | {o:.1f} | {t:.1f} | {r:.2f} |" for n, o, t, r in rows]
        if torch.cuda.get_device_capability() >= (8, 0):
            print("  gemm bf16 ...", flush=True)
            rows = time_gemm(torch, lib, dev, gen, torch.bfloat16)
            out += ["", "## GEMM, bf16 in, bf16 out, fp32 accumulation", "", "| shape (m x n x k) | ours TFLOP/s | torch.matmul TFLOP/s | ratio |", "|---|---|---|---|"]
            out += [f"| {n} | {o:.1f} | {t:.1f} | {r:.2f} |" for n, o, t, r in rows]
        else:
            out += ["", "## GEMM, bf16: not timed (no bf16 tensor cores below sm_80; our bf16 GEMM returns MP_ERR_UNSUPPORTED there)"]
        shapes = transformer_shapes()
        print("  unscale and optimizer phase ...", flush=True)
        n = count_params(shapes)
        t_o, t_t = time_unscale(torch, lib, dev, gen, shapes)
        torch.cuda.empty_cache()
        p_o, p_t = time_optimizer_phase(torch, lib, dev, gen, shapes)
        torch.cuda.empty_cache()
        tb_o, tb_t = time_unscale(torch, lib, dev, gen, shapes, torch.bfloat16)
        torch.cuda.empty_cache()
        pb_o, pb_t = time_optimizer_phase_bf16(torch, lib, dev, gen, shapes)
        torch.cuda.empty_cache()
        out += ["", f"## Optimizer, {len(shapes)} tensors, {n / 1e6:.1f}M parameters (GPT-2-medium shapes), fp32 master weights and gradients", ""]
        out += ["| phase | ours ms | PyTorch ms | ratio | goal |", "|---|---|---|---|---|"]
        out.append(f"| unscale + inf/NaN check (ours multi-tensor vs `_amp_foreach_non_finite_check_and_unscale_`) | {t_o:.3f} | {t_t:.3f} | {t_t / t_o:.2f} | |")
        out.append(f"| optimizer phase (ours: check + AdamW writing fp16 copies + update_scale; PyTorch: GradScaler.step with AdamW(fused=True) + update + the fp16 casts autocast makes) | {p_o:.3f} | {p_t:.3f} | {p_t / p_o:.2f} | >= 1.4 |")
        if tb_t is not None:
            out.append(f"| unscale + inf/NaN check, bf16 gradients (same calls) | {tb_o:.3f} | {tb_t:.3f} | {tb_t / tb_o:.2f} | |")
        else:
            out.append(f"| unscale + inf/NaN check, bf16 gradients (ours; this torch's kernel refuses bf16) | {tb_o:.3f} | n/a | | |")
        out.append(f"| optimizer phase, bf16, no loss scaling (ours: AdamW writing bf16 copies; PyTorch: AdamW(fused=True) + the bf16 casts autocast makes) | {pb_o:.3f} | {pb_t:.3f} | {pb_t / pb_o:.2f} | |")
        ours = ours_train_step(args.ours_train_step)
        out += ["", "## Training step (time per step, batch uploaded from host memory each step)", ""]
        out += ["| model | batch | ours eager us | ours graph us | PyTorch AMP eager us | PyTorch AMP graph us | eager ratio | graph ratio | ours graph vs PyTorch eager |", "|---|---|---|---|---|---|---|---|---|"]
        for model, widths, batch, act in (("digits_mlp", [64, 128, 128, 10], 256, "relu"), ("mlp_4096", [1024, 4096, 4096, 4096, 1024], 8192, "gelu")):
            print(f"  train step {model} ...", flush=True)
            t_eager = time_torch_step(torch, dev, gen, widths, batch, act, graphs=False) * 1e3
            try:
                t_graph = time_torch_step(torch, dev, gen, widths, batch, act, graphs=True) * 1e3
                graph_cell = f"{t_graph:.1f}"
            except Exception as e:  # capture is not supported everywhere; say why
                t_graph, graph_cell = None, f"capture failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
            o = ours.get(model)
            if o:
                ratio_e = f"{t_eager / o[0]:.2f}"
                ratio_g = f"{t_graph / o[1]:.2f}" if t_graph else "n/a"
                vs_eager = f"{t_eager / o[1]:.2f}"
                out.append(f"| {model} {widths} | {batch} | {o[0]:.1f} | {o[1]:.1f} | {t_eager:.1f} | {graph_cell} | {ratio_e} | {ratio_g} | {vs_eager} |")
            else:
                out.append(f"| {model} {widths} | {batch} | not in {args.ours_train_step or '(no --ours-train-step log)'} | | {t_eager:.1f} | {graph_cell} | | | |")
        out += ["", "Goals: optimizer phase >= 1.4x PyTorch's; training step faster than PyTorch AMP eager on both models; the digits step >= 5x faster with graph replay (ours graph vs PyTorch eager)."]
        if not args.skip_gpt2:
            gc.collect()
            torch.cuda.empty_cache()
            out += gpt2_section(torch, dev, args)
    lib.close()
    return finish(out, args)


def finish(out, args):
    """Prints the tables, writes them to --out, and the exit status."""
    text = "\n".join(out) + "\n"
    print()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if failures:
        print(f"side_by_side: {len(failures)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
