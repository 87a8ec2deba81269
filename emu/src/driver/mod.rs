//! Driver state: contexts, memory, streams, events, capture and graphs.

pub mod memory;
