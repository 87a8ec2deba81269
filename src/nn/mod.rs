//! Parameters and layers: the flat arena every layer's weights live in, [`Linear`] and
//! [`Mlp`].

mod arena;
mod linear;
mod mlp;

pub use arena::{ArenaLayout, ParamArena, ParamSpec, Weights, PARAM_ALIGN};
pub use linear::Linear;
pub use mlp::Mlp;
