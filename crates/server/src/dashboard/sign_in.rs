//! Dashboard sign-in: a browser posts its token once and gets a session cookie
//! ([`crate::api::sessions`]), so no token is ever in a URL, a history entry or a log.

use std::time::Duration;

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use crate::api::sessions;
use crate::api::{authorize, authorize_hash, tokens, AppError, AppState};

/// Where the sign-in form posts.
pub const SIGN_IN: &str = "/dashboard/session";
/// Where the sign-out button posts.
pub const SIGN_OUT: &str = "/dashboard/sign-out";
/// Longest wait for the sign-in form's body once its head has arrived: the header-read
/// timeout does not cover a body sent one byte at a time.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

const ENDED: &str = "Your session has ended (it expired, you signed out, or its token was revoked): sign in again.";

#[derive(Deserialize)]
pub struct SignInForm {
    pub token: String,
}

/// The sign-in page, with `notice` above the form; sessions last `ttl`.
pub fn page(notice: Option<&str>, ttl: Duration) -> String {
    super::render::sign_in_page(notice, &human(ttl))
}

/// "8 h", "90 min", "30 s".
fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The sign-in page as a response; `clear` also deletes a stale session cookie.
fn refused(state: &AppState, status: StatusCode, notice: Option<&str>, clear: bool) -> Response {
    let mut response = (status, Html(page(notice, state.sessions.ttl()))).into_response();
    let h = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if clear {
        if let Ok(v) = HeaderValue::from_str(&sessions::removal_cookie()) {
            h.insert(header::SET_COOKIE, v);
        }
    }
    response
}

/// The session id in the request's cookies, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(sessions::from_cookie_header)
}

/// `None` when the request has a live session whose token is still active (its name is then
/// the request's caller); otherwise the sign-in page to answer with. A session whose token
/// was revoked is ended here.
pub async fn require_session(state: &AppState, headers: &HeaderMap) -> Result<Option<Response>, AppError> {
    let Some(id) = session_id(headers) else {
        return Ok(Some(refused(state, StatusCode::UNAUTHORIZED, None, false)));
    };
    let Some(hash) = state.sessions.token_of(id) else {
        return Ok(Some(refused(state, StatusCode::UNAUTHORIZED, Some(ENDED), true)));
    };
    match authorize_hash(state, hash).await {
        Ok(_) => Ok(None),
        Err(AppError::Unauthorized(_)) => {
            state.sessions.end(id);
            Ok(Some(refused(state, StatusCode::UNAUTHORIZED, Some(ENDED), true)))
        }
        Err(e) => Err(e),
    }
}

/// A form posted from another site (login CSRF) is refused. Browsers say where a request
/// comes from in `Sec-Fetch-Site`, or else in `Origin`; under `Referrer-Policy: no-referrer`
/// (ours) Chromium sends `Origin: null` even from our own page, so `Sec-Fetch-Site` decides
/// first. A request with neither is not a browser's.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok();
    let authority = origin.and_then(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")));
    authority.is_some() && authority == host
}

/// `POST /dashboard/session` (form field `token`): checks the token like a bearer header, then
/// sets the session cookie and redirects (303) to the dashboard.
pub async fn sign_in(State(state): State<AppState>, req: Request) -> Result<Response, AppError> {
    if !same_origin(req.headers()) {
        return Ok(refused(
            &state,
            StatusCode::FORBIDDEN,
            Some("Sign-in refused: the form was posted from another site."),
            false,
        ));
    }
    let form = match tokio::time::timeout(BODY_TIMEOUT, Form::<SignInForm>::from_request(req, &state)).await {
        Err(_) => {
            return Ok(refused(
                &state,
                StatusCode::REQUEST_TIMEOUT,
                Some("The sign-in form took too long to arrive."),
                false,
            ))
        }
        Ok(Err(rejection)) => {
            tracing::debug!(target: "cis::api", error = %rejection, "malformed sign-in form");
            return Ok(refused(
                &state,
                StatusCode::BAD_REQUEST,
                Some("The sign-in form needs a token."),
                false,
            ));
        }
        Ok(Ok(Form(form))) => form,
    };
    let token = form.token.trim();
    let checked = if token.is_empty() || token.len() > tokens::MAX_TOKEN_LEN {
        Err(AppError::Unauthorized("invalid or revoked token"))
    } else {
        authorize(&state, token).await
    };
    match checked {
        Ok(_) => {}
        Err(AppError::Unauthorized(why)) => return Ok(refused(&state, StatusCode::UNAUTHORIZED, Some(why), false)),
        Err(e) => return Err(e),
    }
    let id = state
        .sessions
        .start(tokens::token_hash(token))
        .map_err(AppError::internal)?;
    let cookie = HeaderValue::from_str(&state.sessions.cookie(&id)).map_err(AppError::internal)?;
    let mut response = Redirect::to("/dashboard").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `POST /dashboard/sign-out`: ends the session, deletes the cookie, back to the sign-in page.
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        state.sessions.end(id);
    }
    let mut response = Redirect::to("/dashboard").into_response();
    if let Ok(v) = HeaderValue::from_str(&sessions::removal_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_form_from_this_server_signs_in() {
        let headers = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).expect("header"));
            }
            h
        };
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080"))));
        assert!(same_origin(&headers(None)), "not a browser's cross-site post");
        assert!(!same_origin(&headers(Some("http://evil.example"))));
        assert!(!same_origin(&headers(Some("null"))));
        assert!(!same_origin(&headers(Some("http://127.0.0.1:8080.evil.example"))));
        let fetched = |site: &'static str| {
            let mut h = headers(Some("null"));
            h.insert("sec-fetch-site", HeaderValue::from_static(site));
            same_origin(&h)
        };
        assert!(fetched("same-origin"), "our own page under no-referrer");
        assert!(!fetched("cross-site") && !fetched("same-site"));
    }

    #[test]
    fn the_sign_in_page_posts_a_password_field() {
        let html = page(Some("<b>"), Duration::from_secs(8 * 3600));
        assert!(html.contains("after 8 h,"), "{html}");
        assert!(html.contains(r#"<form id="sign-in" method="post" action="/dashboard/session">"#));
        assert!(html.contains(r#"type="password" name="token""#));
        assert!(html.contains("&lt;b&gt;"), "the notice is escaped");
        assert!(!html.contains(sessions::COOKIE), "the page never shows the session");
    }
}
