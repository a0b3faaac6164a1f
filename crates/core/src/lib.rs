//! cis-core: what every other cis crate speaks — time, money, the event kinds and their
//! canonical encoding, the bitemporal point (T, K) a read is made at, and fetching artifacts by kind.

pub mod artifact;
mod as_of;
pub mod choice;
pub mod event;
pub mod money;
pub mod time;

pub use as_of::AsOf;
pub use choice::{Choice, UnknownChoice};
