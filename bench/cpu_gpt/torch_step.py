"""PyTorch's eager fp32 CPU training step on the model, weights and batch that
`cargo bench --bench gpt_cpu -- DIR` wrote to DIR/<case>/ (nanoGPT's GPT: pre-norm
blocks, causal self-attention through scaled_dot_product_attention, GELU-tanh MLP, lm_head
tied to wte; the loss over the real vocabulary's columns), with torch.optim.AdamW at the
same settings as ours (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01).

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
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class Attention(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c)
        self.c_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c)
        self.attn = Attention(c, heads)
        self.ln_2 = nn.LayerNorm(c)
        self.mlp = Mlp(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, s):
        super().__init__()
        c = s["width"]
        self.vocab = s["vocab"]
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(s["padded_vocab"], c),
                wpe=nn.Embedding(s["context"], c),
                h=nn.ModuleList([Block(c, s["heads"]) for _ in range(s["layers"])]),
                ln_f=nn.LayerNorm(c),
            )
        )
        self.lm_head = nn.Linear(c, s["padded_vocab"], bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))[..., : self.vocab]
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))


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
