"""nanoGPT's GPT in PyTorch, the baseline model of the GPT benches: pre-norm blocks,
causal self-attention through scaled_dot_product_attention, GELU-tanh MLP, lm_head tied
to wte. Parameter names are nanoGPT's, which are ours (src/nn/gpt.rs), so our
safetensors load by name (`load_state_dict(..., strict=False)`: lm_head.weight is the
tie). Shared by bench/cpu_gpt/torch_step.py (the CPU fp32 step, on our weights) and
bench/pytorch/side_by_side.py (GPT-2 small under AMP on the GPU).

A model is described by a dict of our GptConfig's fields: vocab, padded_vocab, context,
layers, heads, width.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


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
    """The model of spec `s`. The loss is over the real vocabulary's columns of the
    logits, as our fused classifier computes it; with padded_loss=True it is over all
    padded_vocab columns, as nanoGPT trains GPT-2 (vocab_size=50304; the padding columns
    are never a label), which saves PyTorch a copy of the sliced logits."""

    def __init__(self, s, padded_loss=False):
        super().__init__()
        c = s["width"]
        self.vocab = s["padded_vocab"] if padded_loss else s["vocab"]
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
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t, device=idx.device))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        if self.vocab < logits.shape[-1]:
            logits = logits[..., : self.vocab]
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))


def init_weights(model, seed):
    """nanoGPT's initialization (what Gpt::init does, from torch's generator): every
    Linear weight and both embeddings normal(0, 0.02), the residual projections (c_proj)
    normal(0, 0.02 / sqrt(2 layers)), biases 0, layernorms 1 and 0."""
    gen = torch.Generator().manual_seed(seed)
    layers = len(model.transformer.h)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif ".ln_" in name:
                p.fill_(1.0)
            else:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("c_proj.weight") else 0.02
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def flops_per_token(model, t):
    """Training FLOPs per token, forward and backward, as nanoGPT's estimate_mfu and our
    Gpt::flops_per_token count them: 6 N + 12 L C T, N the parameters without the
    position embedding (the tied lm_head counted once)."""
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    layers = len(model.transformer.h)
    width = model.transformer.wpe.weight.shape[1]
    return 6 * n + 12 * layers * width * t
