//! `GET /export/customer_risk_scores?as_of=…&format=csv|parquet`: the table `cis export scores`
//! writes, as a download.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::api::error::AppError;
use crate::api::params::Params;
use crate::api::{blocking, AppState};
use cis_core::time::{self, Timestamp};
use cis_export::{write_table, ExportError, Format, ScoreTable, TABLE};

pub const PARAMS: [&str; 2] = ["as_of", "format"];
/// Names the score artifact a download was read from.
pub const SCORE_HASH_HEADER: &str = "x-cis-score-hash";

/// The encoded table and the hash of the score run it holds. Blocking.
fn encode(state: &AppState, as_of: Timestamp, format: Format) -> Result<(Vec<u8>, String), AppError> {
    let table = ScoreTable::latest(&state.store, as_of).map_err(|e| match e {
        ExportError::NoScores { .. } => AppError::NotFound(e.to_string()),
        e => AppError::internal(e),
    })?;
    // The export module writes files (atomically, synced): write into a private temporary
    // directory and read it back, so that the API and `cis export` give the same bytes.
    let dir = tempfile::tempdir().map_err(AppError::internal)?;
    let path = dir.path().join(format!("{TABLE}.{format}"));
    write_table(&table, format, &path).map_err(AppError::internal)?;
    let bytes = std::fs::read(&path).map_err(AppError::internal)?;
    Ok((bytes, table.score_hash))
}

pub async fn handler(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, AppError> {
    let params = Params::parse(q, &PARAMS)?;
    let format: Format = params
        .get("format")
        .map_or(Ok(Format::Csv), str::parse)
        .map_err(|e| AppError::param("format", e))?;
    let as_of = params.time("as_of")?.unwrap_or_else(time::now);
    let (bytes, score_hash) = blocking(&state, move |s| encode(s, as_of, format)).await?;
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Parquet => "application/vnd.apache.parquet",
    };
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{TABLE}.{format}\"")).map_err(AppError::internal)?;
    let hash = HeaderValue::from_str(&score_hash).map_err(AppError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, disposition),
            (HeaderName::from_static(SCORE_HASH_HEADER), hash),
        ],
        bytes,
    )
        .into_response())
}
