//! Query parameters: strict (unknown or repeated names are a 400 naming them) and typed.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;

use crate::api::error::AppError;
use cis_core::time::{self, Micros};

pub struct Params(Vec<(String, String)>);

impl Params {
    /// Accepts only the names in `allowed`, each at most once.
    pub fn parse(
        q: Result<Query<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Params, AppError> {
        let Query(pairs) = q.map_err(|e| AppError::param("query", e.body_text()))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let known = if allowed.is_empty() {
                    "this endpoint takes no parameters".to_string()
                } else {
                    format!("known parameters: {}", allowed.join(", "))
                };
                return Err(AppError::param(name, format!("unknown parameter; {known}")));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(AppError::param(name, "given more than once"));
            }
        }
        Ok(Params(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn required(&self, name: &str) -> Result<&str, AppError> {
        match self.get(name) {
            None => Err(AppError::param(name, "is required")),
            Some("") => Err(AppError::param(name, "is empty")),
            Some(v) => Ok(v),
        }
    }

    /// An RFC 3339 timestamp or a YYYY-MM-DD date (midnight UTC), if given.
    pub fn time(&self, name: &str) -> Result<Option<Micros>, AppError> {
        self.get(name)
            .map(|v| time::parse_timestamp(v).map_err(|e| AppError::param(name, e.to_string())))
            .transpose()
    }
}
