//! The one error type of the HTTP API: 4xx carry their reason as `{"error": "..."}` (plus
//! `"parameter"` when a query or path parameter is at fault); a 500 says only "internal error"
//! and the cause is logged.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::tokens::TokenError;
use cis_core::artifact::ArtifactError;
use cis_features::compute::ComputeError;
use cis_features::snapshot::SnapshotError;
use cis_models::ModelError;

#[derive(Debug)]
#[non_exhaustive]
pub enum AppError {
    /// A query or path parameter is missing, malformed or out of range.
    BadParam {
        param: String,
        reason: String,
    },
    /// No token, or one that is unknown or revoked.
    Unauthorized(&'static str),
    /// A valid token without the scope the route needs.
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed,
    UriTooLong(String),
    PayloadTooLarge(u64),
    /// A route this server does not serve, saying why.
    NotImplemented(String),
    /// Anything the client cannot fix: logged with its causes, answered as a bare 500.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn param(param: &str, reason: impl Into<String>) -> AppError {
        AppError::BadParam {
            param: param.to_string(),
            reason: reason.into(),
        }
    }

    /// An error (or a message) the client cannot fix.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> AppError {
        AppError::Internal(e.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadParam { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            AppError::BadParam { param, reason } => json!({
                "error": format!("parameter '{param}': {reason}"),
                "parameter": param,
            }),
            AppError::Unauthorized(why) => json!({ "error": why }),
            AppError::Forbidden(why) => json!({ "error": why }),
            AppError::NotFound(what) => json!({ "error": what }),
            AppError::MethodNotAllowed => json!({ "error": "method not allowed" }),
            AppError::UriTooLong(what) | AppError::NotImplemented(what) => json!({ "error": what }),
            AppError::PayloadTooLarge(limit) => json!({ "error": format!("request body over {limit} bytes") }),
            AppError::Internal(e) => {
                let mut error = e.to_string();
                let mut cause = e.source();
                while let Some(c) = cause {
                    error = format!("{error}: {c}");
                    cause = c.source();
                }
                tracing::error!(error, "internal error answering a request");
                json!({ "error": "internal error" })
            }
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, AppError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::internal(e)
    }
}

impl From<cis_storage::StorageError> for AppError {
    fn from(e: cis_storage::StorageError) -> Self {
        AppError::internal(e)
    }
}

impl From<ComputeError> for AppError {
    fn from(e: ComputeError) -> Self {
        AppError::internal(e)
    }
}

impl From<ModelError> for AppError {
    fn from(e: ModelError) -> Self {
        AppError::internal(e)
    }
}

impl From<TokenError> for AppError {
    fn from(e: TokenError) -> Self {
        AppError::internal(e)
    }
}

impl From<ArtifactError> for AppError {
    /// For a hash given by the client: not found → 404, ambiguous or malformed → 400.
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::NotFound(h) => AppError::NotFound(format!("no artifact {h}")),
            ArtifactError::BadHash(_) | ArtifactError::Ambiguous(_) => AppError::param("hash", e.to_string()),
            other => AppError::internal(other),
        }
    }
}

impl From<SnapshotError> for AppError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Artifact(e) => e.into(),
            other => AppError::internal(other),
        }
    }
}
