//! A linear layer: a weight (`out x in`, PyTorch's layout) and a bias in the arena.

use crate::autograd::{Tape, Var};
use crate::backend::Backend;
use crate::error::Result;
use crate::kernels::gemm::Activation;
use crate::nn::ArenaLayout;
use crate::rng::Rng;

/// `y = act(x W^T + b)`, with the activation fused into the GEMM's epilogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linear {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// The weight's index in the arena layout.
    pub weight: usize,
    /// The bias's index, if the layer has one.
    pub bias: Option<usize>,
}

impl Linear {
    /// Adds the layer's parameters to `layout` as `<name>.weight` and `<name>.bias`.
    pub fn new(
        layout: &mut ArenaLayout,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = layout.push(&format!("{name}.weight"), &[out_features, in_features])?;
        let bias = if bias { Some(layout.push(&format!("{name}.bias"), &[out_features])?) } else { None };
        Ok(Linear { in_features, out_features, weight, bias })
    }

    /// PyTorch's default initialization of `nn.Linear` (kaiming_uniform with a = sqrt(5)
    /// for the weight, which is U(-1/sqrt(in), 1/sqrt(in)), and the same bound for the
    /// bias), drawn from `rng`: the weight's values, then the bias's.
    pub fn init(&self, rng: &mut Rng) -> (Vec<f32>, Option<Vec<f32>>) {
        let bound = if self.in_features == 0 { 0.0 } else { 1.0 / (self.in_features as f32).sqrt() };
        let w = rng.uniform_vec(self.in_features * self.out_features, -bound, bound);
        let b = self.bias.map(|_| rng.uniform_vec(self.out_features, -bound, bound));
        (w, b)
    }

    /// Records the layer on the tape.
    pub fn forward<B: Backend>(
        &self,
        tape: &mut Tape<B>,
        be: &B,
        params: &B::Params,
        x: Var,
        act: Activation,
    ) -> Result<Var> {
        tape.linear(be, params, x, self.weight, self.bias, act)
    }
}
