//! cis-ops: governance over the stored artifacts — monitoring (drift, data quality, model
//! decay), audits that re-derive artifacts from their parents, and erasure.

pub mod audit;
pub mod erasure;
pub mod monitor;
