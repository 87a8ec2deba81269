//! Driver state: contexts, memory, streams, events, capture and graphs.
//!
//! Each submodule exposes the calls of one family as functions that take the global
//! lock ([`state::with`]) and return `Result<_, CuResult>`; the `extern "C"` layer
//! (`crate::api`) only translates C arguments into them.

pub mod allocations;
pub mod context;
pub mod device;
pub mod error;
pub mod faults;
pub mod graph;
pub mod memcalls;
pub mod module;
pub mod order;
pub mod resources;
pub mod state;
pub mod stream;
