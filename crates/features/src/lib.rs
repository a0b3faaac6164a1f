//! Point-in-time features: one shared definition set ([`defs`]), materialised as of any
//! (T, K) in one scan of the log ([`compute`]), stored as hashed snapshots ([`snapshot`]),
//! with leakage-safe training labels ([`labels`]).

pub mod compute;
pub mod defs;
pub mod labels;
pub mod snapshot;
