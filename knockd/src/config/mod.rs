//! knockd.conf: parsing (pure, `parse`) and loading from disk (`load`).

pub mod model;
pub use model::*;
