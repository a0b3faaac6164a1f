//! cis-core: what every other cis crate speaks — time, money, the event kinds and their
//! canonical encoding, and the bitemporal point (T, K) a read is made at.

mod as_of;
pub mod choice;
pub mod event;
pub mod money;
pub mod time;

pub use as_of::AsOf;
pub use choice::{Choice, UnknownChoice};
