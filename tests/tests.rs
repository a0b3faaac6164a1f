//! cis integration tests, one binary, modules by theme.

mod http;
mod scored;
mod tables;
mod util;

mod access_log;
mod admin;
mod api;
mod churn;
mod crash;
mod dashboard;
mod decay;
mod demo;
mod drift;
mod erasure;
mod erasure_steps;
mod export;
mod features;
mod fixture_store;
mod golden;
mod ingest;
mod models;
mod mutation;
mod parquet_in;
mod pipeline;
mod promotion;
mod quality;
mod serve_admin;
mod store_lock;
mod survival;
mod time_travel;
mod trainset;
mod two_servers;
mod validation;
