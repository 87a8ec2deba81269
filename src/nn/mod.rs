//! Parameters and layers: the flat arena every layer's weights live in, [`Linear`],
//! [`Mlp`] and [`Gpt`].

mod arena;
mod gpt;
mod linear;
mod mlp;

pub use arena::{ArenaLayout, ParamArena, ParamSpec, Weights, PARAM_ALIGN};
pub use gpt::{Gpt, GptConfig};
pub use linear::Linear;
pub use mlp::Mlp;
