//! cis-server: the HTTP API (profiles, artifacts, exports, metrics, admin jobs), its bearer
//! tokens, the access log and the Customer Health dashboard.

pub mod access_log;
pub mod api;
pub mod dashboard;
pub mod jobs;
