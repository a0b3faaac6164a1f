//! cis: the Customer Intelligence System.
//!
//! Raw customer events are validated ([`ingest`]), stored in the bitemporal event log of
//! `cis-storage`, and read back as they were known at any time ([`history`]).
//! See `ARCHITECTURE.md` for the map.

pub mod access_log;
pub mod api;
pub mod audit;
pub mod cli;
pub mod dashboard;
pub mod demo;
pub mod erasure;
pub mod event;
pub mod export;
pub mod features;
pub mod history;
pub mod ingest;
pub mod models;
pub mod money;
pub mod monitor;
pub mod synth;
pub mod time;
