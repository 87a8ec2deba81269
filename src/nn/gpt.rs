//! A GPT-2 style transformer (nanoGPT's `GPT`): token and position embeddings, `layers`
//! pre-norm blocks of causal self-attention and a GELU MLP, a final layernorm and an
//! output projection tied to the token embedding.
//!
//! Parameters are named and shaped as nanoGPT's module names them
//! (`transformer.wte.weight`, `transformer.h.<i>.attn.c_attn.weight`, ...; `nn.Linear`'s
//! `out x in`), so safetensors files move between the two. `lm_head.weight` is not a
//! parameter of its own: it is `transformer.wte.weight` (PyTorch ties them the same way;
//! load our files with `strict=False`, or let the tie fill it).
//!
//! The forward uses the fused residual + layernorm throughout: the first block's `ln_1`
//! normalizes the embedding, and every later layernorm (`ln_2`, the next block's `ln_1`,
//! `ln_f`) first adds the branch it follows to the residual stream, as llm.c does.

use crate::autograd::{Tape, Var};
use crate::backend::{AttnDims, TransformerBackend};
use crate::error::{Error, Result};
use crate::kernels::gemm::Activation;
use crate::nn::{ArenaLayout, Linear};
use crate::rng::Rng;

/// The shape of a [`Gpt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptConfig {
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// Rows of the embedding table and columns of the logits: the vocabulary rounded up
    /// (GPT-2 pads 50257 to 50304 for the GEMMs); the extra rows are never looked up and
    /// their logits are ignored by the loss.
    pub padded_vocab: usize,
    /// The longest sequence (rows of the position embedding).
    pub context: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads; `width % heads == 0`.
    pub heads: usize,
    /// Channels (the embedding width).
    pub width: usize,
}

impl GptConfig {
    /// GPT-2 small (124M): 12 layers, 12 heads, 768 channels, 1024 tokens of context,
    /// GPT-2's 50257 tokens padded to 50304.
    pub fn gpt2_small() -> Self {
        GptConfig { vocab: 50257, padded_vocab: 50304, context: 1024, layers: 12, heads: 12, width: 768 }
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArgument { op, what: "config", why });
        let GptConfig { vocab, padded_vocab, context, layers, heads, width } = *self;
        if [vocab, context, layers, heads, width].contains(&0) {
            return bad(format!("{self:?}: every size must be at least 1"));
        }
        if padded_vocab < vocab {
            return bad(format!("{self:?}: padded_vocab is below vocab"));
        }
        if width % heads != 0 {
            return bad(format!("{self:?}: width {width} is not a multiple of heads {heads}"));
        }
        Ok(())
    }
}

/// One block's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    ln_1: (usize, usize),
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: (usize, usize),
    c_fc: Linear,
    mlp_proj: Linear,
}

/// The model: its configuration and where each parameter lives in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    cfg: GptConfig,
    wte: usize,
    wpe: usize,
    blocks: Vec<Block>,
    ln_f: (usize, usize),
    layout: ArenaLayout,
}

impl Gpt {
    /// The parameters of `cfg` in a fresh layout, in nanoGPT's `named_parameters()`
    /// order and names.
    pub fn new(cfg: GptConfig) -> Result<Self> {
        cfg.validate("Gpt::new")?;
        let c = cfg.width;
        let mut layout = ArenaLayout::new();
        let wte = layout.push("transformer.wte.weight", &[cfg.padded_vocab, c])?;
        let wpe = layout.push("transformer.wpe.weight", &[cfg.context, c])?;
        let norm = |layout: &mut ArenaLayout, name: &str| -> Result<(usize, usize)> {
            Ok((layout.push(&format!("{name}.weight"), &[c])?, layout.push(&format!("{name}.bias"), &[c])?))
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("transformer.h.{i}");
            let ln_1 = norm(&mut layout, &format!("{p}.ln_1"))?;
            let c_attn = Linear::new(&mut layout, &format!("{p}.attn.c_attn"), c, 3 * c, true)?;
            let attn_proj = Linear::new(&mut layout, &format!("{p}.attn.c_proj"), c, c, true)?;
            let ln_2 = norm(&mut layout, &format!("{p}.ln_2"))?;
            let c_fc = Linear::new(&mut layout, &format!("{p}.mlp.c_fc"), c, 4 * c, true)?;
            let mlp_proj = Linear::new(&mut layout, &format!("{p}.mlp.c_proj"), 4 * c, c, true)?;
            blocks.push(Block { ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj });
        }
        let ln_f = norm(&mut layout, "transformer.ln_f")?;
        Ok(Gpt { cfg, wte, wpe, blocks, ln_f, layout })
    }

    /// The configuration.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// Where the parameters live (pass it to `Backend::params`).
    pub fn layout(&self) -> &ArenaLayout {
        &self.layout
    }

    /// Parameters, the position embedding included (nanoGPT's `get_num_params` counts
    /// it too unless asked not to).
    pub fn num_params(&self) -> usize {
        self.layout.params().iter().map(|p| p.len).sum()
    }

    /// FLOPs of one training step per token, forward and backward, as llm.c and nanoGPT
    /// estimate them for MFU: `6 N + 12 L C T` (matmuls, and the attention's two).
    pub fn flops_per_token(&self, t: usize) -> f64 {
        let n = (self.num_params() - self.cfg.context * self.cfg.width) as f64;
        6.0 * n + 12.0 * (self.cfg.layers * self.cfg.width * t) as f64
    }

    /// nanoGPT's initialization from a seeded generator: every `nn.Linear` weight and both
    /// embeddings normal(0, 0.02), the residual projections (`c_proj`) normal(0,
    /// 0.02 / sqrt(2 layers)), biases 0, layernorm weights 1 and biases 0. Values per
    /// parameter in layout order.
    pub fn init(&self, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed);
        let proj_std = 0.02 / (2.0 * self.cfg.layers as f32).sqrt();
        self.layout
            .params()
            .iter()
            .map(|p| {
                let name = p.name.as_str();
                if name.ends_with(".bias") || (name.contains(".ln_") && name.ends_with(".weight")) {
                    let one = name.contains(".ln_") && name.ends_with(".weight");
                    vec![if one { 1.0 } else { 0.0 }; p.len]
                } else {
                    let std = if name.ends_with("c_proj.weight") { proj_std } else { 0.02 };
                    (0..p.len).map(|_| std * rng.normal()).collect()
                }
            })
            .collect()
    }

    /// Records the forward pass over `tokens` (sequences of `t`, `t <= context`):
    /// returns the logits, `(B T) x padded_vocab`.
    pub fn forward<B: TransformerBackend + 'static>(
        &self,
        tape: &mut Tape<B>,
        be: &B,
        params: &B::Params,
        tokens: &B::Tokens,
        t: usize,
    ) -> Result<Var> {
        const OP: &str = "Gpt::forward";
        if t == 0 || t > self.cfg.context {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "t",
                why: format!("{t} tokens per sequence; the context is {}", self.cfg.context),
            });
        }
        let x = tape.embedding(be, params, tokens, self.wte, self.wpe, t)?;
        let rows = be.shape(tape.value(x)?).0;
        let dims = AttnDims { b: rows / t, t, c: self.cfg.width, nh: self.cfg.heads };
        let (mut residual, mut h) =
            tape.residual_layernorm(be, params, x, None, self.blocks[0].ln_1.0, self.blocks[0].ln_1.1)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let qkv = block.c_attn.forward(tape, be, params, h, Activation::None)?;
            let att = tape.attention(be, qkv, dims)?;
            let proj = block.attn_proj.forward(tape, be, params, att, Activation::None)?;
            let (r, h2) = tape.residual_layernorm(be, params, residual, Some(proj), block.ln_2.0, block.ln_2.1)?;
            let fc = block.c_fc.forward(tape, be, params, h2, Activation::Gelu)?;
            let mlp = block.mlp_proj.forward(tape, be, params, fc, Activation::None)?;
            let next = self.blocks.get(i + 1).map_or(self.ln_f, |b| b.ln_1);
            (residual, h) = tape.residual_layernorm(be, params, r, Some(mlp), next.0, next.1)?;
        }
        tape.linear(be, params, h, self.wte, None, Activation::None)
    }
}
