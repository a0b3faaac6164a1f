//! cis: the Customer Intelligence System's command line, over the library crates in
//! `crates/` and `storage/` (see `ARCHITECTURE.md` for the map).

pub mod cli;
pub mod demo;
mod progress;
