//! cis integration tests, one binary, modules by theme.

mod util;

mod crash;
mod features;
mod golden;
mod ingest;
mod models;
mod time_travel;
mod validation;
