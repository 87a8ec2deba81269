"""PyTorch's eager fp32 CPU training step on the model, weights and batch that
`cargo bench --bench gpt_cpu -- DIR` wrote to DIR/<case>/ (nanoGPT's GPT, from
bench/pytorch/nanogpt.py: pre-norm blocks, causal self-attention through
scaled_dot_product_attention, GELU-tanh MLP, lm_head tied to wte; the loss over the real
vocabulary's columns), with torch.optim.AdamW at the same settings as ours (lr 1e-3,
betas (0.9, 0.999), eps 1e-8, weight_decay 0.01).

Timing: warm-up steps, then the median of timed steps on the host clock, each step
zero_grad + forward + loss + backward + optimizer step + loss.item(). Prints one line per
case: `torch_cpu <case> median_s <t> tokens_per_s <r> first_loss <l>`.

    python bench/cpu_gpt/torch_step.py DIR [--threads N]
"""

import argparse
import json
import math
import pathlib
import statistics
import sys
import time

import torch
from safetensors.torch import load_file

# The model is shared with bench/pytorch/side_by_side.py.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "pytorch"))
from nanogpt import Gpt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for case_dir in sorted(p for p in pathlib.Path(args.dir).iterdir() if (p / "case.json").exists()):
        s = json.loads((case_dir / "case.json").read_text())
        model = Gpt(s)
        missing, unexpected = model.load_state_dict(load_file(str(case_dir / "init.safetensors")), strict=False)
        assert missing == ["lm_head.weight"] and not unexpected, (missing, unexpected)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        b, t = s["batch"], s["context"]
        x = torch.tensor(s["x"], dtype=torch.long).view(b, t)
        y = torch.tensor(s["y"], dtype=torch.long).view(b, t)
        times, first = [], math.nan
        for i in range(s["warmup"] + s["runs"]):
            started = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = model(x, y)
            loss.backward()
            opt.step()
            value = loss.item()
            if i == 0:
                first = value
            if i >= s["warmup"]:
                times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"torch_cpu {case_dir.name} median_s {median:.6f} tokens_per_s {b * t / median:.0f} first_loss {first:.6f}")


if __name__ == "__main__":
    main()
