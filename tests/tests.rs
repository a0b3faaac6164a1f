//! cis integration tests, one binary, modules by theme.

mod util;

mod api;
mod crash;
mod dashboard;
mod export;
mod features;
mod golden;
mod ingest;
mod models;
mod time_travel;
mod validation;
