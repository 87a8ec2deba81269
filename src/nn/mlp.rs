//! A multi-layer perceptron from a list of widths.

use crate::autograd::{Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::kernels::gemm::Activation;
use crate::nn::{ArenaLayout, Linear};
use crate::rng::Rng;

/// `widths[0] -> widths[1] -> ... -> widths[n]`: a [`Linear`] layer (with bias) between
/// each pair, the activation after every layer but the last (which gives logits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mlp {
    layers: Vec<Linear>,
    activation: Activation,
    layout: ArenaLayout,
}

impl Mlp {
    /// The layers for `widths` (at least two, none zero), parameters named
    /// `layers.<i>.weight` and `layers.<i>.bias` in a fresh arena layout: the names
    /// PyTorch's `named_parameters()` gives a module whose `nn.Linear`s are in an
    /// `nn.ModuleList` called `layers`.
    pub fn new(widths: &[usize], activation: Activation) -> Result<Self> {
        const OP: &str = "Mlp::new";
        if widths.len() < 2 || widths.contains(&0) {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "widths",
                why: format!("{widths:?}: need at least an input and an output width, none zero"),
            });
        }
        let mut layout = ArenaLayout::new();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(&mut layout, &format!("layers.{i}"), w[0], w[1], true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Mlp { layers, activation, layout })
    }

    /// The layers, input first.
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// The hidden activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Where the parameters live (pass it to [`Backend::params`]).
    pub fn layout(&self) -> &ArenaLayout {
        &self.layout
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.layers[0].in_features
    }

    /// Output features (classes).
    pub fn out_features(&self) -> usize {
        self.layers[self.layers.len() - 1].out_features
    }

    /// Multiply-adds per sample of the forward pass (a step costs about 3x as many).
    pub fn macs_per_sample(&self) -> usize {
        self.layers.iter().map(|l| l.in_features * l.out_features).sum()
    }

    /// PyTorch's default initialization from a seeded generator: values per parameter in
    /// layout order, ready for [`Backend::params`].
    pub fn init(&self, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed);
        let mut values = Vec::with_capacity(self.layout.params().len());
        for layer in &self.layers {
            let (w, b) = layer.init(&mut rng);
            values.push(w);
            values.extend(b);
        }
        values
    }

    /// Records the forward pass; returns the logits.
    pub fn forward<B: Backend>(&self, tape: &mut Tape<B>, be: &B, params: &B::Params, x: Var) -> Result<Var> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let act = if i == last { Activation::None } else { self.activation };
            h = layer.forward(tape, be, params, h, act)?;
        }
        Ok(h)
    }
}
