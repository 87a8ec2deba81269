#!/usr/bin/env python3
"""Turns the emulator's per-launch cost lines into the cost report (issue 15, "Cost model").

    scripts/cost_table.py OUTDIR [--commit HASH] [--tree TEXT] [--date YYYY-MM-DD]

Reads OUTDIR/raw/<case>.jsonl (the lines MP_EMU_COST=<file> appended, one per launch, in
launch order) and OUTDIR/raw/cases.log (examples/cost_cases.rs's stdout: `case`, `info`,
`begin NAME OFFSET`, `end NAME OFFSET` lines) and writes OUTDIR/cost.md. Only a case's
launches between its last begin/end marks count; set-up before them is kept in the raw
file but left out of the table. A case the device cannot run prints `skip NAME: WHY`
instead of marks (the bf16 GEMM below sm_80) and is listed as skipped. Python 3 standard
library only.

Every figure is modelled: bytes, sectors, wavefronts and instructions the emulator
counted (emu/src/cost.rs), and H100 times derived from them; nothing is measured on a GPU.
"""

import argparse
import json
import os
import re
import sys
from collections import OrderedDict

# The modelled H100 (SXM): HBM3 bandwidth and dense fp16 tensor-core rate (989.4 TFLOP/s;
# the bf16 rate is the same).
H100_BYTES_PER_S = 3.35e12
H100_MACS_PER_S = 494.7e12
# L2 hit bandwidth, the rate of the L2-eq. term: about 12 TB/s, the figure given for the
# H100 SXM5 in fridayswithfaraday.com's "L2 Cache Behavior: Residency Control, Working Set
# Effects, and Cache-Aware Kernel Design" (its L2 table). The microbenchmark papers (Luo et
# al., arXiv 2402.13499 / 2501.12084; Chips and Cheese's H100 article, which tested the
# 114-SM PCIe card) were not readable past their abstracts where this was written, so no
# figure of theirs is used. A high rate keeps the term a lower bound.
H100_L2_BYTES_PER_S = 12e12
# Warp-instruction issue: 132 SMs on the H100 SXM5 with 4 warp schedulers per SM, each
# issuing at most one warp instruction per cycle (3eyedtech.com/gpgpu, "NVIDIA H100 SXM5":
# 132 SMs, 4 warp schedulers / SM; the SM of NVIDIA's Hopper whitepaper, four processing
# blocks each with a scheduler), at 1.98 GHz, the higher of the two boost clocks
# glennklockwood.com/garden/processors/h100 lists for the H100 SXM5 (1.83 GHz for the
# low-precision tensor rates, which the 494.7 T MAC/s above matches: 132 x 2048 MAC/clk x
# 1.83 GHz; 1.98 GHz for the others): the higher clock keeps the term a lower bound.
H100_SMS = 132
H100_SCHEDULERS_PER_SM = 4
H100_CLOCK_HZ = 1.98e9
H100_WARP_INSTS_PER_S = H100_SMS * H100_SCHEDULERS_PER_SM * H100_CLOCK_HZ

# The terms of the modelled lower bound, in the order the table lists them.
TERMS = ("DRAM", "L2", "tensor", "issue")

# Goals of issue 15.
COALESCING_GOAL = 0.95
BYTES_GOAL = 1.05

SIZE = {"f32": 4, "f16": 2, "bf16": 2}

# The GPT kernels (embedding, layernorm, attention, classifier, the strided-batched GEMM)
# have no goal of their own: a row is flagged when its DRAM-eq. exceeds this many times its
# minimum, or its coalescing is below this fraction.
FLAG_BYTES = 1.5
FLAG_COALESCING = 0.80

# Kernel families of the GPT cases (examples/cost_cases.rs, GPT_CASES).
GPT_KERNELS = ("embedding_", "layernorm_", "attention_softmax_", "fused_classifier_", "gemm_batched_",
               "gemm_bf16_batched_")

# A GEMM case's name: gemm_[bf16_]<layout or k0>_<epilogue>. The prefix names the
# operands' half type (none: f16).
GEMM_CASE = re.compile(r"^(gemm_(?:bf16_)?)(k0|nn|nt|tn|tt)_(.+)$")


def gemm_case(name):
    """(prefix, layout or "k0", epilogue) of a GEMM case's name, or None."""
    m = GEMM_CASE.match(name)
    return m.groups() if m else None


def half_of_prefix(prefix):
    return "bf16" if prefix == "gemm_bf16_" else "f16"


def adam_minimum(weights, g):
    """(footprint, traffic, what) bytes per parameter of one AdamW pass, from
    cuda/adam.cu's header: master weights (p m v f32 read + written, copy 2 written) or
    pure bf16 weights (p 2 m v 8 read + written), and gradients of g bytes read."""
    if weights == "pure":
        return 10 + g, 20 + g, f"{20 + g} B/elem (bf16 p read+write 4, m v read+write 16, g {g})"
    return 12 + g + 2, 24 + g + 2, f"{24 + g + 2} B/elem (p m v read+write 24, g {g}, copy 2)"


def mode_label(info):
    """The optimizer mode a case's info names."""
    if info.get("mode") == "pure_bf16" or info.get("weights") == "pure":
        return "pure bf16 weights (no master)"
    copy = info.get("copy") or {"f16": "f16", "bf16": "bf16"}.get(info.get("mode"), "f16")
    return f"f32 master + {copy} copy"


def parse_log(path):
    """case name -> {"desc", "info": {k: v}, "begin", "end", "notes": [..]}, in order."""
    cases = OrderedDict()
    device = None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("device "):
                device = line[len("device "):]
                continue
            m = re.match(r"case (\S+): (.*)$", line)
            if m:
                cases.setdefault(m.group(1), {"info": {}, "notes": []})["desc"] = m.group(2)
                continue
            m = re.match(r"skip (\S+): (.*)$", line)
            if m:
                cases.setdefault(m.group(1), {"info": {}, "notes": []})["skip"] = m.group(2)
                continue
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("info", "begin", "end", "note"):
                c = cases.setdefault(parts[1], {"info": {}, "notes": []})
                if parts[0] == "info":
                    for kv in parts[2:]:
                        k, _, v = kv.partition("=")
                        c["info"][k] = v
                elif parts[0] == "note":
                    c["notes"].append(" ".join(parts[2:]))
                else:
                    if len(parts) < 3 or parts[2] == "-":
                        sys.exit(f"cost_table.py: {path}: {line!r}: no cost-file offset (MP_EMU_COST unset?)")
                    c[parts[0]] = int(parts[2])
    return device, cases


def read_launches(path, begin, end):
    with open(path) as f:
        lines = [l for l in f.read().split("\n") if l.strip()]
    if end > len(lines) or begin > end:
        sys.exit(f"cost_table.py: {path}: marks [{begin}, {end}) but {len(lines)} lines")
    return [json.loads(l) for l in lines[begin:end]]


def minimum(kernel, info):
    """(footprint, traffic, what) in bytes: the least a kernel must touch (distinct bytes)
    and move (reads plus writes), from the byte counts in its cuda/*.cu header, or None
    where the case gives no shape for it. An array read and written in place is one
    footprint but two transfers."""
    n = int(info.get("n", 0))
    dt = info.get("dtype")
    if kernel.startswith("cast_"):
        return 6 * n, 6 * n, "6 B/elem (read 4 + write 2, or read 2 + write 4)"
    if kernel.startswith("unscale_check"):
        g = SIZE[kernel.rsplit("_", 1)[1]]
        if info.get("mode") == "unscale":
            return g * n, 2 * g * n, f"{2 * g} B/elem (read + write {g}, in place)"
        return g * n, g * n, f"{g} B/elem (check only: read {g})"
    if kernel.startswith(("adamw_step", "adamw_pure")):
        n = int(info.get("n", info.get("params", 0)))
        g = SIZE[kernel.rsplit("_", 1)[1]]
        foot, traffic, what = adam_minimum("pure" if kernel.startswith("adamw_pure") else "master", g)
        return foot * n, traffic * n, what
    if kernel.startswith("gemm_") and "m" in info:
        m, nn, k = int(info["m"]), int(info["n"]), int(info["k"])
        c = SIZE[info["out"]]
        b = SIZE.get(info.get("bias"), 0)
        pre = 2 * m * nn if info.get("pre") == "1" else 0
        total = 2 * (m * k + k * nn) + c * m * nn + b * nn + pre
        what = f"2(MK+KN) + {c}MN" + (f" + {b}N bias" if b else "") + (" + 2MN pre" if pre else "")
        # Attention's causal GEMMs (src/kernels/gemm.rs, Triangle): LowerC wants only C on
        # and below the diagonal (M = N), LowerA/UpperA have an op(A) that is zero on one
        # side of it (M = K): the minimum counts only that triangle, diagonal included; the
        # kernel skips whole 128 x 128 tiles, so it moves more than this where T is small.
        tri = info.get("triangle", "Full")
        if tri == "LowerC":
            total = 2 * (m * k + k * nn) + c * m * (m + 1) // 2
            what = f"2(MK+KN) + {c} M(M+1)/2 (C's lower triangle)"
        elif tri in ("LowerA", "UpperA"):
            total = 2 * m * (m + 1) // 2 + 2 * k * nn + c * m * nn
            what = f"2 M(M+1)/2 (op(A)'s {'lower' if tri == 'LowerA' else 'upper'} triangle) + 2KN + {c}MN"
        # gemm_strided_batched: every batch's A and B read once and its C written once. The
        # batches of attention's GEMMs are disjoint head slices, so nothing is shared.
        batches = int(info.get("batches", 1))
        if batches > 1:
            total *= batches
            what = f"{batches} x ({what})"
        if info.get("in") == "bf16":
            what += " (bf16 operands)"
        return total, total, what
    gpt = gpt_minimum(kernel, info)
    if gpt is not None:
        return gpt
    if kernel == "update_scale":
        return 12, 12, "12 B: found_inf, growth tracker, scale (4 B each)"
    if kernel == "adam_count_step":
        return 8, 8, "8 B: step, found_inf"
    return None


def gpt_minimum(kernel, info):
    """(footprint, traffic, what) of the GPT kernels, from first principles: each input
    read once, each output written once, an f32 gradient updated with += read and written
    (two transfers, one footprint), at the element sizes of the cuda/*.cu headers. None
    for other kernels."""
    h = SIZE.get(info.get("dtype"), 2)
    if kernel.startswith("embedding_forward"):
        # tok ids (4 B each), the wte rows of the distinct tokens only (a token that occurs
        # twice needs its row once), the T wpe rows used, out written.
        n, t, c, d = int(info["rows"]), int(info["t"]), int(info["c"]), int(info["distinct"])
        total = 4 * n + h * d * c + h * t * c + h * n * c
        return total, total, (f"4 n tok + {h} C (distinct tokens {d} wte rows + T wpe rows) + {h} n C out, "
                              f"n = {n}, C = {c}, T = {t}")
    if kernel.startswith("embedding_backward"):
        # The index words the backward needs (count, bucket_token[d], bucket_start[d + 1],
        # bucket_rows[n]; not the ids), dout once, and += on the d touched dwte rows and the
        # T dwpe rows (f32, read + written). found_inf is not written on finite data.
        n, t, c, d = int(info["rows"]), int(info["t"]), int(info["c"]), int(info["distinct"])
        index = 4 * (2 + 2 * d + n)
        foot = index + h * n * c + 4 * d * c + 4 * t * c
        total = index + h * n * c + 8 * d * c + 8 * t * c
        return foot, total, (f"index 4(2 + 2d + n) + {h} n C dout + 8 C (d = {d} dwte rows + T dwpe rows) "
                             f"read + written, n = {n}, C = {c}, T = {t}")
    if kernel.startswith("layernorm_forward"):
        # x (and y, with the residual) read, r (with it) and out written, gamma beta read,
        # the statistics mean and rstd (f32 per row) written.
        n, c = int(info["rows"]), int(info["c"])
        res = info.get("residual") == "1"
        rows_io = 4 if res else 2
        total = rows_io * h * n * c + 2 * h * c + 8 * n
        io = "x y read, r out written" if res else "x read, out written"
        return total, total, f"{rows_io} x {h} B/elem ({io}) + gamma beta {2 * h} C + mean rstd 8 n, n = {n}, C = {c}"
    if kernel.startswith("layernorm_backward"):
        # dh and r read, dr written (no residual gradient in), gamma read, mean rstd read.
        n, c = int(info["rows"]), int(info["c"])
        rows_io = 4 if info.get("dres") == "1" else 3
        total = rows_io * h * n * c + h * c + 8 * n
        return total, total, (f"{rows_io} x {h} B/elem (dh, r read, dr written) + gamma {h} C + "
                              f"mean rstd 8 n, n = {n}, C = {c}")
    if kernel.startswith("layernorm_dparams_partial"):
        # dh, r, mean, rstd read; the per-chunk partial sums (f32, 2 x chunks x C) written:
        # the two-launch design's own intermediate, small next to the rows.
        n, c, k = int(info["rows"]), int(info["c"]), int(info["chunks"])
        total = 2 * h * n * c + 8 * n + 8 * k * c
        return total, total, f"dh r {2 * h} n C + mean rstd 8 n + scratch 8 chunks C (chunks = {k}), n = {n}, C = {c}"
    if kernel == "layernorm_dparams_total":
        c, k = int(info["c"]), int(info["chunks"])
        return 8 * k * c + 8 * c, 8 * k * c + 16 * c, f"scratch 8 chunks C read + dgamma dbeta f32 += 16 C, C = {c}"
    if kernel.startswith("attention_softmax_forward"):
        # Causal: row q reads its q + 1 visible scores (f32) only; P is written in full
        # (zeros above the diagonal: the P V GEMM runs over the square).
        r, t = int(info["rows"]), int(info["t"])
        vis = r * (t + 1) // 2
        total = 4 * vis + h * r * t
        return total, total, f"S f32 lower triangle 4 rows (T + 1) / 2 + P {h} rows T, rows = {r}, T = {t}"
    if kernel.startswith("attention_softmax_backward"):
        # P (half) and dP (f32) read on and below the diagonal, dS written in full.
        r, t = int(info["rows"]), int(info["t"])
        vis = r * (t + 1) // 2
        total = (h + 4) * vis + h * r * t
        return total, total, (f"P {h} + dP 4 over the lower triangle rows (T + 1) / 2 + dS {h} rows T, "
                              f"rows = {r}, T = {t}")
    if kernel.startswith("fused_classifier"):
        # The V real logits of each row read (the padding never), label and loss per row,
        # the loss scale once; dlogits written over the padded row (zeros in the padding).
        r, v, vp = int(info["rows"]), int(info["vocab"]), int(info["padded"])
        total = h * r * v + h * r * vp + 8 * r + 4 * int(info.get("scale", 0))
        return total, total, f"{h} rows V logits + {h} rows Vp dlogits + 8 rows (label, loss) + scale, V = {v}, Vp = {vp}"
    if kernel == "sum_f32" and "padded" in info:
        # The classifier's mean: its losses read, one f32 written (beta = 0).
        r = int(info["rows"])
        return 4 * r + 4, 4 * r + 4, "losses 4 rows read + the mean 4 written"
    return None


def gpt_kernel(kernel, case):
    return kernel.startswith(GPT_KERNELS) or (kernel == "sum_f32" and case.startswith("classifier"))


def memory_bound(kernel):
    return kernel.startswith(("cast_", "unscale_check", "adamw_step", "adamw_pure"))


def terms_us(launch):
    """The modelled H100 time of each term for one launch (µs): DRAM-eq. bytes, L2-eq.
    bytes, tensor-core MACs and warp instructions, each at its rate. The issue term is None
    for lines of an emulator that did not count warp instructions."""
    warp = launch.get("warp_insts")
    return {
        "DRAM": 32 * launch["dram_sectors"] / H100_BYTES_PER_S * 1e6,
        "L2": 32 * launch["global_sectors"] / H100_L2_BYTES_PER_S * 1e6,
        "tensor": launch["macs"] / H100_MACS_PER_S * 1e6,
        "issue": None if warp is None else sum(warp.values()) / H100_WARP_INSTS_PER_S * 1e6,
    }


def fmt_bytes(b):
    if b is None:
        return "—"
    if b >= 1 << 20:
        return f"{b / (1 << 20):.2f} MiB"
    if b >= 1 << 10:
        return f"{b / (1 << 10):.1f} KiB"
    return f"{b} B"


def fmt_int(x):
    return f"{x:,}"


def fmt_ratio(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def fmt_pct(x):
    return "—" if x is None else f"{100 * x:.1f}%"


def fmt_warp(thread_insts):
    w = thread_insts / 32
    return f"{w:.2f}" if 0 < w < 100 else fmt_int(round(w))


def fmt_us(x):
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


class Row:
    """One (case, kernel): its launches summed."""

    def __init__(self, case, kernel):
        self.case, self.kernel = case, kernel
        self.launches = 0
        self.c = {k: 0 for k in ("macs", "global_bytes", "global_warp_insts", "global_sectors", "dram_sectors",
                                  "shared_bytes", "shared_warp_insts", "shared_wavefronts",
                                  "shared_ideal_wavefronts", "global_unique_bytes")}
        # Emulators that count distinct bytes per warp instruction report
        # global_unique_bytes; coalescing is then judged on it (broadcasts share a sector).
        self.unique = None
        self.insts = {k: 0 for k in ("memory", "arithmetic", "tensor", "control")}
        # Warp instructions issued, by class (None: the emulator did not count them).
        self.warp = {k: 0 for k in ("memory", "arithmetic", "tensor", "control")}
        self.us = 0.0
        # Each term of the lower bound summed over the launches, and the µs each term was
        # the largest of its launch's terms (what the row's "bound by" names).
        self.terms = {t: 0.0 for t in TERMS}
        self.bounding = {t: 0.0 for t in TERMS}
        self.min = None
        self.goal = "—"
        self.why = ""

    def add(self, launch):
        self.launches += 1
        self.unique = "global_unique_bytes" in launch if self.unique is None else self.unique
        for k in self.c:
            self.c[k] += launch.get(k, 0)
        for k in self.insts:
            self.insts[k] += launch["thread_insts"][k]
        if "warp_insts" not in launch:
            self.warp = None
        if self.warp is not None:
            for k in self.warp:
                self.warp[k] += launch["warp_insts"][k]
        terms = terms_us(launch)
        known = {t: v for t, v in terms.items() if v is not None}
        top = max(known, key=known.get)
        self.us += known[top]
        self.bounding[top] += known[top]
        for t, v in terms.items():
            self.terms[t] = None if v is None or self.terms[t] is None else self.terms[t] + v

    @property
    def bound_by(self):
        """The term that bounds the most of the row's modelled time."""
        return max(TERMS, key=lambda t: self.bounding[t]) if self.us else "—"

    @property
    def dram(self):
        return 32 * self.c["dram_sectors"]

    @property
    def traffic(self):
        # The emulator counts the sectors read and the sectors written apart, so an
        # array updated in place counts twice: DRAM-eq. is the traffic.
        return self.dram

    @property
    def l2(self):
        return 32 * self.c["global_sectors"]

    @property
    def coalescing(self):
        b = self.c["global_unique_bytes"] if self.unique else self.c["global_bytes"]
        return b / self.l2 if self.l2 else None

    @property
    def bank(self):
        i = self.c["shared_ideal_wavefronts"]
        return self.c["shared_wavefronts"] / i if i else None

    @property
    def ratio(self):
        return self.dram / self.min[1] if self.min and self.min[1] else None


def build_rows(raw, cases):
    rows = []
    for name, c in cases.items():
        if "skip" in c:
            c["launches"] = []
            continue
        if "begin" not in c or "end" not in c:
            sys.exit(f"cost_table.py: case {name} has no begin/end marks (did it fail?)")
        launches = read_launches(os.path.join(raw, f"{name}.jsonl"), c["begin"], c["end"])
        by_kernel = OrderedDict()
        for l in launches:
            r = by_kernel.get(l["kernel"])
            if r is None:
                r = by_kernel[l["kernel"]] = Row(name, l["kernel"])
            r.add(l)
        for r in by_kernel.values():
            r.min = minimum(r.kernel, c["info"])
        # Modelled time, launch by launch (Row.add), summed per kernel.
        c["launches"] = launches
        rows.extend(by_kernel.values())
    return rows


def judge(rows, cases):
    """Sets each row's goal column; returns the GEMM main-loop derivations."""
    k0 = {}
    for r in rows:
        g = gemm_case(r.case)
        if g and g[1] == "k0":
            k0[(g[0], g[2])] = r
    derived = []
    for r in rows:
        if gpt_kernel(r.kernel, r.case):
            if r.min is None:
                continue
            flags = []
            if r.ratio is not None and r.ratio > FLAG_BYTES:
                flags.append(f"{r.ratio:.2f}x the minimum traffic > {FLAG_BYTES}x")
            if r.coalescing is not None and r.coalescing < FLAG_COALESCING:
                flags.append(f"coalescing {fmt_pct(r.coalescing)} < {FLAG_COALESCING:.0%}")
            r.goal = "flagged" if flags else "ok"
            r.why = "; ".join(flags)
        elif r.kernel in ("update_scale", "adam_count_step"):
            r.goal, r.why = "n/a", "scalar kernel: one sector per scalar touched"
        elif memory_bound(r.kernel):
            if r.min is None:
                r.goal = "—"
                continue
            misses = []
            if r.coalescing < COALESCING_GOAL:
                misses.append(f"coalescing {fmt_pct(r.coalescing)} < 95%")
            if r.ratio > BYTES_GOAL:
                misses.append(f"{r.ratio:.3f}x the minimum traffic > 1.05x")
            r.goal = "misses" if misses else "meets"
            r.why = "; ".join(misses)
        elif r.kernel.startswith("gemm_") and gemm_case(r.case) and gemm_case(r.case)[1] != "k0":
            prefix, _, epi = gemm_case(r.case)
            e = k0.get((prefix, epi))
            if e is None:
                continue
            wf = r.c["shared_wavefronts"] - e.c["shared_wavefronts"]
            ideal = r.c["shared_ideal_wavefronts"] - e.c["shared_ideal_wavefronts"]
            key = "global_unique_bytes" if r.unique else "global_bytes"
            bytes_ = r.c[key] - e.c[key]
            sectors = r.c["global_sectors"] - e.c["global_sectors"]
            main_bank = wf / ideal if ideal else None
            main_coal = bytes_ / (32 * sectors) if sectors else None
            derived.append((r, e, main_bank, main_coal))
            r.goal = "meets" if main_bank is not None and abs(main_bank - 1.0) < 1e-9 else "misses"
            r.why = (f"main loop: shared factor {fmt_ratio(main_bank, 3)}, coalescing {fmt_pct(main_coal)}; "
                     f"epilogue (no goal): shared factor {fmt_ratio(e.bank, 3)}, coalescing {fmt_pct(e.coalescing)}")
    return derived


def train_minimum(info):
    """(bytes per parameter, why) the optimizer phase of a training step must move: one
    AdamW pass over the arena's gradients, the inf/NaN check being fused into the kernels
    that write them."""
    g = SIZE[info.get("grads", "f32")]
    weights = "pure" if info.get("mode") == "pure_bf16" else "master"
    per = adam_minimum(weights, g)[1]
    why = f"AdamW alone, {info.get('grads', 'f32')} grads: cuda/adam.cu"
    if info.get("mode", "f16") == "f16":
        why += "; issue 15: 34 with a check pass, goal 30"
    return per, why


def min_max(values, fmt):
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    lo, hi = min(v), max(v)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)} to {fmt(hi)}"


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--tree", default="", help="what the checkout held beyond the commit")
    ap.add_argument("--date", default="")
    ap.add_argument("--script", default="scripts/emu-profile.sh")
    a = ap.parse_args()
    raw = os.path.join(a.outdir, "raw")
    device, cases = parse_log(os.path.join(raw, "cases.log"))
    rows = build_rows(raw, cases)
    derived = judge(rows, cases)

    md = []
    md.append("# Modelled cost of the kernels (emulator)")
    md.append("")
    md.append(f"Produced by `{a.script}` from commit `{a.commit}` on {a.date or 'an unrecorded date'}"
              + (f" ({a.tree})" if a.tree else "") + f", on {device or 'an unnamed device'}.")
    md.append("")
    md.append(
        "**Every figure here is modelled, not measured on a GPU.** Bytes, sectors, shared-memory "
        "wavefronts and instructions are counted by the CUDA driver emulator (`emu/`, "
        "`MP_EMU_COST`; the model is documented in `emu/src/cost.rs`) as it executes our PTX "
        "thread by thread; the H100 times are derived from those counts. In particular:")
    md.append("")
    md.append(
        "- *DRAM-eq.* is (the launch's distinct 32-byte sectors read + its distinct sectors "
        "written) x 32: the DRAM traffic of an L2 that holds the launch's whole working set (a "
        "sector updated in place counts twice: it is read, then written back). It is compared "
        "with the *minimum traffic*, from the bytes per element in each `cuda/*.cu` header.")
    if all(r.unique for r in rows):
        md.append(
            "- *L2-eq.* is every sector each warp instruction touches, summed. *Coalescing* is the "
            "distinct bytes each warp instruction asks for / L2-eq. bytes (lanes reading the same "
            "scalar share its sector).")
    else:
        md.append(
            "- *L2-eq.* is every sector each warp instruction touches, summed. *Coalescing* is "
            "requested bytes / L2-eq. bytes, per warp instruction as the issue defines it; lanes "
            "reading the same word (a broadcast scalar) count once per lane in the requested bytes, "
            "so a kernel that broadcasts can exceed 100% (this emulator does not count distinct "
            "bytes per warp instruction).")
    md.append(
        "- *Bank factor* is shared-memory wavefronts / the conflict-free ideal (32 banks of 4 "
        "bytes; ideal = distinct bytes / 128 per warp instruction). wmma loads are modelled as "
        "ldmatrix does them (each 8x8 f16 sub-matrix, 8 rows of 16 bytes, one phase), wmma f32 "
        "stores as 8 phases of two 64-byte rows.")
    md.append(
        f"- *H100 lower bound* = max(DRAM-eq. bytes / {H100_BYTES_PER_S / 1e12:.2f} TB/s, L2-eq. bytes / "
        f"{H100_L2_BYTES_PER_S / 1e12:.0f} TB/s, tensor MACs / {H100_MACS_PER_S / 1e12:.1f} T MAC/s fp16 "
        f"dense, warp instructions / ({H100_SMS} SMs x {H100_SCHEDULERS_PER_SM} schedulers x "
        f"{H100_CLOCK_HZ / 1e9:.2f} GHz = {H100_WARP_INSTS_PER_S / 1e12:.3f} T/s)), per launch, summed: "
        "modelled, with no launch overhead, latency, occupancy, dependency stalls or tail effects, "
        "each unit assumed busy the whole time. *Bound by* names the term that was the largest for "
        "most of the row's modelled time (DRAM, L2, tensor, issue). The rates and their sources are "
        "in `scripts/cost_table.py` and in the results folder's README.")
    md.append(
        "- *Warp instructions* are counted per warp: a warp issues an instruction as often as its "
        "busiest lane executes it (a converged instruction is one issue; divergent paths each "
        "issue). They are PTX instructions, not SASS: ptxas splits some (a wmma mma is several "
        "HMMA) and folds others (parameter loads, address arithmetic). *SIMT efficiency* = "
        "thread-instructions / (32 x warp instructions): below 100% where lanes diverge or a "
        "warp is partial.")
    md.append(
        "- Memory copies and memsets (uploads, `memcpy_dtod`) are not kernel launches and are not "
        "counted.")
    md.append("")

    # Summary.
    md.append("## Summary (modelled)")
    md.append("")
    mem = [r for r in rows if memory_bound(r.kernel) and r.goal in ("meets", "misses")]
    mem_miss = [r for r in mem if r.goal == "misses"]
    md.append(f"- Memory-bound kernels (cast, unscale_check, adamw): {len(mem) - len(mem_miss)} of {len(mem)} "
              "rows meet >= 95% coalescing and <= 1.05x the minimum traffic"
              + ("" if not mem_miss else "; missing: " + ", ".join(f"`{r.case}`" for r in mem_miss)) + "; "
              + f"coalescing {min_max((r.coalescing for r in mem), fmt_pct)}, DRAM-eq. / minimum "
              + f"{min_max((r.ratio for r in mem), lambda x: f'{x:.3f}x')}.")
    for half in ("f16", "bf16"):
        ds = [d for d in derived if half_of_prefix(gemm_case(d[0].case)[0]) == half]
        if not ds:
            continue
        banks = [d[2] for d in ds]
        md.append(f"- GEMM 1024^3, {half} operands, {len(ds)} layout/epilogue pairs: main-loop shared bank factor "
                  f"{min_max(banks, lambda x: f'{x:.3f}')} "
                  f"({sum(1 for b in banks if b is not None and abs(b - 1) < 1e-9)} of {len(banks)} conflict-free); "
                  f"DRAM-eq. {min_max((r.ratio for r, *_ in ds), lambda x: f'{x:.3f}x')} the minimum; "
                  f"{min_max((r.c['macs'] / r.l2 for r, *_ in ds), lambda x: f'{x:.1f}')} MACs per L2 byte; "
                  f"epilogue (C stores) coalescing {min_max((d[1].coalescing for d in ds), fmt_pct)}, "
                  f"epilogue bank factor {min_max((d[1].bank for d in ds), lambda x: f'{x:.2f}')}; "
                  f"modelled H100 lower bound {min_max((r.us for r, *_ in ds), fmt_us)} µs "
                  f"(DRAM {min_max((r.terms['DRAM'] for r, *_ in ds), fmt_us)} µs, "
                  f"L2 {min_max((r.terms['L2'] for r, *_ in ds), fmt_us)} µs, "
                  f"tensor cores {min_max((r.terms['tensor'] for r, *_ in ds), fmt_us)} µs, "
                  f"issue {min_max((r.terms['issue'] for r, *_ in ds), fmt_us)} µs; bound by "
                  f"{', '.join(sorted({r.bound_by for r, *_ in ds}))}).")
    gpt = [r for r in rows if r.goal in ("ok", "flagged")]
    if gpt:
        flagged = [r for r in gpt if r.goal == "flagged"]
        md.append(f"- GPT kernels (embedding, layernorm, attention, classifier, strided-batched GEMM), "
                  f"{len(gpt)} rows: DRAM-eq. / minimum {min_max((r.ratio for r in gpt), lambda x: f'{x:.3f}x')}, "
                  f"coalescing {min_max((r.coalescing for r in gpt), fmt_pct)}; "
                  f"{len(flagged)} flagged (> {FLAG_BYTES}x the minimum or coalescing < {FLAG_COALESCING:.0%})"
                  + ("" if not flagged else ": " + ", ".join(f"`{r.case}` `{r.kernel}`" for r in flagged)) + ".")
    for name, c in cases.items():
        if "params" in c["info"]:
            params = int(c["info"]["params"])
            opt = [r for r in rows if r.case == name and r.kernel.startswith(("unscale_check", "adam"))]
            md.append(f"- Training step `{name}`, {mode_label(c['info'])}: optimizer phase "
                      f"({', '.join(sorted({r.kernel for r in opt}))}) "
                      f"{sum(r.dram for r in opt) / params:.2f} B/param DRAM-eq., counted (reads + writes); "
                      f"minimum {train_minimum(c['info'])[0]} B/param ({train_minimum(c['info'])[1]}).")
    md.append("")

    # Cases.
    md.append("## Cases")
    md.append("")
    md.append("Each case ran once, in its own process, on the emulator (`examples/cost_cases.rs`; "
              "random non-zero data, fixed seeds); only the launches between its marks count.")
    md.append("")
    md.append(table(["case", "what ran", "launches"],
                    [[f"`{n}`", c.get("desc", ""), f"skipped: {c['skip']}" if "skip" in c else len(c["launches"])]
                     for n, c in cases.items()]))
    md.append("")

    # Goals summary.
    md.append("## Against the goals of issue 15")
    md.append("")
    md.append("Memory-bound kernels: >= 95% coalescing and DRAM-eq. <= 1.05x the minimum traffic. "
              "GEMM: the main loop's shared-memory accesses conflict-free (bank factor 1.0), the main "
              "loop's figures being the full GEMM's minus those of the same epilogue run alone "
              "(`gemm_k0_*`: K = 0, no tiles).")
    md.append("")
    goal_rows = []
    for r in rows:
        if r.goal in ("meets", "misses"):
            goal_rows.append([f"`{r.case}`", f"`{r.kernel}`", fmt_pct(r.coalescing), fmt_ratio(r.ratio, 3),
                              fmt_ratio(r.bank, 3), r.goal, r.why])
    md.append(table(["case", "kernel", "coalescing", "DRAM-eq. / min traffic", "bank factor (all)",
                     "goal", "why"], goal_rows))
    md.append("")

    # GPT kernels.
    if gpt:
        md.append("## GPT kernels: bytes against their minimum")
        md.append("")
        md.append(f"GPT-2 small's widths (C 768, 12 heads of 64, V 50257 padded to 50304) over B T = 1024 rows "
                  f"(B 4, T 256; the classifier 64 rows). Minimum = each input read once and each output "
                  f"written once (an f32 gradient updated with += read and written), from first principles "
                  f"(`gpt_minimum` in `scripts/cost_table.py` says what each counts). A row is flagged when "
                  f"DRAM-eq. > {FLAG_BYTES}x the minimum or coalescing < {FLAG_COALESCING:.0%}. L2-eq. / DRAM-eq. "
                  f"shows how often the kernel comes back to the same bytes (re-reads an L2 must absorb).")
        md.append("")
        grows = []
        for r in gpt:
            grows.append([f"`{r.case}`", f"`{r.kernel}`", r.launches, fmt_bytes(r.dram), fmt_bytes(r.min[1]),
                          fmt_ratio(r.ratio, 3), fmt_ratio(r.l2 / r.dram if r.dram else None, 2),
                          fmt_pct(r.coalescing), fmt_ratio(r.bank, 3), r.goal, r.why])
        md.append(table(["case", "kernel", "launches", "DRAM-eq.", "minimum", "ratio", "L2-eq. / DRAM-eq.",
                         "coalescing", "bank factor", "flag", "why flagged"], grows))
        md.append("")

    # Main table.
    md.append("## Per case and kernel")
    md.append("")
    main_rows = []
    for r in rows:
        mn = r.min
        main_rows.append([
            f"`{r.case}`", f"`{r.kernel}`", r.launches, fmt_bytes(r.dram),
            fmt_bytes(mn[1]) if mn else "—", fmt_ratio(r.ratio, 3),
            fmt_bytes(r.l2), fmt_pct(r.coalescing), fmt_ratio(r.bank, 3),
            fmt_int(r.c["macs"]) if r.c["macs"] else "0", fmt_us(r.us), r.bound_by, r.goal,
        ])
    md.append(table(["case", "kernel", "launches", "DRAM-eq.", "min traffic", "ratio",
                     "L2-eq.", "coalescing", "bank factor", "MACs",
                     "H100 lower bound, µs (modelled)", "bound by", "goal"], main_rows))
    md.append("")
    md.append("Minimums, from the headers: " + "; ".join(sorted({
        f"`{r.kernel}` {r.min[2]}" for r in rows if r.min and not r.case.startswith("train")})) + ".")
    md.append("")

    # Lower bound by term.
    md.append("## Modelled H100 lower bound, term by term")
    md.append("")
    md.append(f"Each term summed over the row's launches (µs, modelled): DRAM-eq. at "
              f"{H100_BYTES_PER_S / 1e12:.2f} TB/s, L2-eq. at {H100_L2_BYTES_PER_S / 1e12:.0f} TB/s, tensor "
              f"MACs at {H100_MACS_PER_S / 1e12:.1f} T/s, warp instructions at "
              f"{H100_WARP_INSTS_PER_S / 1e12:.3f} T/s. The lower bound is the largest term per launch, "
              "summed; *bound by* is the term that was largest for most of that time.")
    md.append("")
    trows = []
    for r in rows:
        trows.append([f"`{r.case}`", f"`{r.kernel}`", r.launches]
                     + ["—" if r.terms[t] is None else fmt_us(r.terms[t]) for t in TERMS]
                     + [fmt_us(r.us), r.bound_by])
    md.append(table(["case", "kernel", "launches", "DRAM µs", "L2 µs", "tensor µs", "issue µs",
                     "lower bound µs", "bound by"], trows))
    md.append("")
    bound = {t: sum(1 for r in rows if r.bound_by == t) for t in TERMS}
    md.append("Rows by bounding term: " + ", ".join(f"{t} {n}" for t, n in bound.items()) + ".")
    md.append("")

    # GEMM.
    if derived:
        md.append("## GEMM: main loop and epilogue")
        md.append("")
        md.append("Main loop = full GEMM minus the epilogue-only run with the same epilogue. MACs per "
                  "L2 byte: the arithmetic intensity the tiling achieves against L2-eq. traffic (per "
                  "DRAM-eq. byte in the next column).")
        md.append("")
        grows = []
        for r, e, main_bank, main_coal in derived:
            grows.append([
                f"`{r.case}`", fmt_ratio(r.c["macs"] / r.l2, 1), fmt_ratio(r.c["macs"] / r.dram, 1),
                fmt_pct(main_coal), fmt_ratio(main_bank, 3), fmt_pct(e.coalescing), fmt_ratio(e.bank, 3),
                fmt_ratio(r.bank, 3),
            ])
        md.append(table(["case", "MACs / L2 byte", "MACs / DRAM byte", "main-loop coalescing",
                         "main-loop bank factor", "epilogue coalescing", "epilogue bank factor",
                         "bank factor (all)"], grows))
        md.append("")

    # Training step.
    for name, c in cases.items():
        if "params" not in c["info"]:
            continue
        params = int(c["info"]["params"])
        trs = [r for r in rows if r.case == name]
        opt = [r for r in trs if r.kernel.startswith(("unscale_check", "adam"))]
        traffic = sum(r.dram for r in opt)
        total_us = sum(r.us for r in trs)
        md.append(f"## The training step's optimizer phase: `{name}`")
        md.append("")
        md.append(
            f"`{name}`: {c.get('desc', '')}; {params:,} parameters; {len(c['launches'])} launches, "
            f"modelled H100 lower bound {fmt_us(total_us)} µs for the kernels (launch overhead not "
            "modelled). " + " ".join(f"({n})" for n in c["notes"]))
        md.append("")
        per, why = train_minimum(c["info"])
        md.append(table(["mode", "optimizer-phase kernels", "DRAM-eq. (reads + writes)", "B/param, counted",
                         "minimum B/param"], [[
                             mode_label(c["info"]), ", ".join(f"`{r.kernel}` x{r.launches}" for r in opt),
                             fmt_bytes(traffic), f"{traffic / params:.2f}", f"{per} ({why})"]]))
        md.append("")
        md.append("Bytes per parameter = the DRAM-eq. bytes of the unscale_check and adam kernels "
                  "of the step (sectors read plus sectors written, as counted) over the parameter count.")
        md.append("")

    # Bytes per parameter by optimizer mode.
    brows = []
    for name, c in cases.items():
        info = c["info"]
        opt = [r for r in rows if r.case == name and r.kernel.startswith(("unscale_check", "adam"))]
        if not opt or not any(r.kernel.startswith("adamw") for r in opt):
            continue
        if "params" in info:
            n = int(info["params"])
            per, why = train_minimum(info)
            grads = info.get("grads", "f32")
        else:
            n = int(info["n"])
            grads = info.get("dtype", "f32")
            per = adam_minimum(info.get("weights", "master"), SIZE[grads])[1]
            why = "cuda/adam.cu"
        counted = sum(r.dram for r in opt) / n
        brows.append([mode_label(info), grads, f"`{name}`", ", ".join(f"`{r.kernel}`" for r in opt),
                      f"{counted:.2f}", f"{per} ({why})", f"{counted / per:.3f}"])
    if brows:
        md.append("## Optimizer bytes per parameter, by mode (counted)")
        md.append("")
        md.append("DRAM-eq. bytes the emulator counted for the optimizer kernels of each case "
                  "(`unscale_check*`, `adam*`: sectors read plus sectors written, x 32) over its "
                  "parameters, next to the minimum from `cuda/adam.cu`'s header. Modelled, not measured.")
        md.append("")
        md.append(table(["mode", "grads", "case", "kernels", "B/param, counted", "minimum B/param",
                         "counted / minimum"], brows))
        md.append("")

    # Instructions.
    md.append("## Warp instructions by class")
    md.append("")
    md.append("Warp instructions issued, counted per warp by the emulator (PTX instructions; see the "
              "notes at the top), and the SIMT efficiency: thread-instructions / (32 x warp instructions).")
    md.append("")
    irows = []
    classes = ("memory", "arithmetic", "tensor", "control")
    for r in rows:
        if r.warp is None:
            counts = [fmt_warp(r.insts[k]) + " (threads / 32)" for k in classes]
            eff = "—"
        else:
            counts = [fmt_int(r.warp[k]) for k in classes]
            w = sum(r.warp.values())
            eff = fmt_pct(sum(r.insts.values()) / (32 * w)) if w else "—"
        irows.append([f"`{r.case}`", f"`{r.kernel}`"] + counts
                     + [eff, fmt_int(r.c["global_warp_insts"]), fmt_int(r.c["shared_warp_insts"])])
    md.append(table(["case", "kernel", "memory", "arithmetic", "tensor", "control", "SIMT efficiency",
                     "global warp accesses", "shared warp accesses"], irows))
    md.append("")
    md.append(f"Raw counters: `raw/<case>.jsonl` (one line per launch, set-up launches included; the "
              "marks in `raw/cases.log` say which lines count).")
    md.append("")

    with open(os.path.join(a.outdir, "cost.md"), "w") as f:
        f.write("\n".join(md))
    print(os.path.join(a.outdir, "cost.md"))


if __name__ == "__main__":
    main()
