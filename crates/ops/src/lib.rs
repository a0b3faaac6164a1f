//! cis-ops: governance over the stored artifacts — monitoring (drift, data quality, model
//! decay), audits that re-derive artifacts from their parents, erasure, and the record of a
//! pipeline run.

pub mod audit;
pub mod erasure;
pub mod monitor;
pub mod pipeline;
