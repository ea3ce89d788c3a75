//! Browser sessions: the refresh token lives in an `HttpOnly` cookie, so no
//! page script (and no XSS) can read it; the body carries only the access token.
//!
//! The cookie is `HttpOnly; Secure; SameSite=Strict` and scoped to the three
//! routes that read it (`Path=/api/v1/auth/session`), so it travels nowhere
//! else. `Secure` is dropped only in development, for `http://localhost`.
//!
//! Cross-site request forgery: SameSite=Strict keeps other sites' pages from
//! sending the cookie at all, and every cookie route also requires the
//! `X-Tessera-Csrf: 1` header. A page can only add a custom header through
//! `fetch`, and a cross-origin `fetch` with one needs a CORS preflight, which
//! the service grants only to `CORS_ALLOWED_ORIGINS`. A form or an image tag
//! cannot send it. A request the browser labels `Sec-Fetch-Site: cross-site` is
//! refused too. The header carries no secret, so there is no token to store.
//! This is the "custom request header" defence of OWASP's CSRF cheat sheet;
//! a double-submit token would add state and buy nothing over it here.

use axum::http::header::{COOKIE, HOST, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::schemas::TokenResponse;
use crate::auth::service::AuthState;
use crate::core::config::REDACTED;
use crate::core::http::no_store::NoStore;
use crate::shared::error::AppError;

/// The cookie that holds a browser session's refresh token.
pub const REFRESH_COOKIE: &str = "tessera_refresh";

/// The cookie's path: the browser-session routes and nothing else.
pub const COOKIE_PATH: &str = "/api/v1/auth/session";

/// The header every cookie route requires, and its one value.
pub const CSRF_HEADER: &str = "x-tessera-csrf";

/// The value [`CSRF_HEADER`] must have.
pub const CSRF_HEADER_VALUE: &str = "1";

/// The value of `X-Tessera-Csrf`, as the document states it.
#[derive(Serialize, ToSchema)]
pub enum CsrfProof {
    /// The only value.
    #[serde(rename = "1")]
    One,
}

/// What a browser session's sign-in and refresh answer: the access token
/// only (the refresh token is in the cookie).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AccessTokenResponse {
    /// A JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: String,
    /// Seconds until the access token expires; refresh before then.
    #[schema(example = 900)]
    pub expires_in: u64,
}

impl std::fmt::Debug for AccessTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenResponse")
            .field("access_token", &REDACTED)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Refuses a request to a cookie route that lacks the CSRF header or that the
/// browser says comes from another site.
pub fn check_csrf(headers: &HeaderMap) -> Result<(), AppError> {
    let proof = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
    if proof != Some(CSRF_HEADER_VALUE.as_bytes()) {
        return Err(AppError::Forbidden {
            code: "csrf_check_failed",
            detail: format!(
                "Browser-session requests must send the `X-Tessera-Csrf: {CSRF_HEADER_VALUE}` header."
            ),
        });
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site")
    {
        return Err(AppError::Forbidden {
            code: "csrf_check_failed",
            detail: "Browser sessions cannot be used from another site.".to_owned(),
        });
    }
    Ok(())
}

/// The refresh token in the request's cookie, if it has one.
pub fn refresh_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == REFRESH_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .filter(|token| !token.is_empty())
}

/// The 401 for a cookie route called without a session cookie.
pub fn no_session() -> AppError {
    AppError::Unauthorized {
        code: "invalid_refresh_token",
        detail: format!("No browser session: the `{REFRESH_COOKIE}` cookie is missing."),
    }
}

/// The answer to a browser sign-in or refresh: the access token in the body,
/// the refresh token in the cookie, neither kept by any cache.
pub fn issued(auth: &AuthState, request: &HeaderMap, pair: TokenResponse) -> Response {
    let max_age = cookie::time::Duration::seconds(
        i64::try_from(auth.tokens.refresh_ttl().as_secs()).unwrap_or(i64::MAX),
    );
    let cookie = session_cookie(auth, request, pair.refresh_token).max_age(max_age);
    let body = AccessTokenResponse {
        access_token: pair.access_token,
        token_type: pair.token_type,
        expires_in: pair.expires_in,
    };
    with_cookie(NoStore(body).into_response(), &cookie.build())
}

/// `response` with the session cookie cleared: after a sign-out, or when
/// the cookie's token was refused (it will never work again).
pub fn cleared(auth: &AuthState, request: &HeaderMap, response: impl IntoResponse) -> Response {
    let cookie = session_cookie(auth, request, String::new())
        .max_age(cookie::time::Duration::ZERO)
        .expires(cookie::time::OffsetDateTime::UNIX_EPOCH);
    with_cookie(response.into_response(), &cookie.build())
}

fn session_cookie(
    auth: &AuthState,
    request: &HeaderMap,
    value: String,
) -> cookie::CookieBuilder<'static> {
    Cookie::build((REFRESH_COOKIE, value))
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(!(auth.config.insecure_localhost_cookies && for_localhost(request)))
        .same_site(SameSite::Strict)
}

fn with_cookie(mut response: Response, cookie: &Cookie<'_>) -> Response {
    match HeaderValue::try_from(cookie.to_string()) {
        Ok(value) => {
            response.headers_mut().append(SET_COOKIE, value);
            response
        }
        Err(error) => AppError::internal(error).into_response(),
    }
}

/// Whether the request was for `localhost` (any port), by its `Host`.
fn for_localhost(request: &HeaderMap) -> bool {
    let Some(host) = request.get(HOST).and_then(|host| host.to_str().ok()) else {
        return false;
    };
    let name = host
        .strip_prefix('[')
        .and_then(|bracketed| bracketed.split_once(']'))
        .map_or_else(|| host.split(':').next().unwrap_or(host), |(ip, _)| ip);
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("test header"));
        }
        map
    }

    #[test]
    fn the_csrf_header_is_required_and_cross_site_requests_are_refused() {
        assert!(check_csrf(&headers(&[(CSRF_HEADER, "1")])).is_ok());
        assert!(
            check_csrf(&headers(&[
                (CSRF_HEADER, "1"),
                ("sec-fetch-site", "same-site")
            ]))
            .is_ok()
        );
        for refused in [
            headers(&[]),
            headers(&[(CSRF_HEADER, "0")]),
            headers(&[(CSRF_HEADER, "")]),
            headers(&[(CSRF_HEADER, "1"), ("sec-fetch-site", "cross-site")]),
        ] {
            assert!(check_csrf(&refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn the_refresh_token_is_read_from_any_cookie_header() {
        let one = headers(&[("cookie", "theme=dark; tessera_refresh=abc-_123; other=1")]);
        assert_eq!(refresh_token(&one).as_deref(), Some("abc-_123"));
        let split = headers(&[("cookie", "theme=dark"), ("cookie", "tessera_refresh=xyz")]);
        assert_eq!(refresh_token(&split).as_deref(), Some("xyz"));
        assert_eq!(
            refresh_token(&headers(&[("cookie", "tessera_refresh=")])),
            None
        );
        assert_eq!(
            refresh_token(&headers(&[("cookie", "tessera_refreshx=1")])),
            None
        );
        assert_eq!(refresh_token(&headers(&[])), None);
    }

    #[test]
    fn only_localhost_hosts_count_as_localhost() {
        for host in [
            "localhost",
            "localhost:8000",
            "127.0.0.1:3000",
            "[::1]:8000",
            "[::1]",
        ] {
            assert!(for_localhost(&headers(&[("host", host)])), "{host}");
        }
        for host in [
            "example.com",
            "localhost.example.com:80",
            "127.0.0.2",
            "[::2]:1",
        ] {
            assert!(!for_localhost(&headers(&[("host", host)])), "{host}");
        }
        assert!(!for_localhost(&headers(&[])));
    }
}
