//! Security headers on every response, errors included.
//!
//! Every response is data that must not be cached (profiles, scores and exports change with
//! each score run, and a shared cache would keep them past a token's revocation) nor
//! reinterpreted by a browser. The one policy also suits the dashboard: its page uses inline
//! styles and `data:` images (the favicon), no script, nothing from another origin, is never
//! framed, and its forms post only to this server.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// `Content-Security-Policy` of every response.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds `X-Content-Type-Options: nosniff`, `Cache-Control: no-store`, the policy above and
/// `Referrer-Policy: no-referrer` (a page URL never leaves the server in a `Referer`).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
