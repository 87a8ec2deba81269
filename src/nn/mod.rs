//! Parameters: the flat arena every layer's weights live in.

mod arena;

pub use arena::{ArenaLayout, ParamArena, ParamSpec, PARAM_ALIGN};
