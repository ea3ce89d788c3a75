//! `/api/v1/auth/session…`: browser sessions whose refresh token lives in an
//! HttpOnly cookie. The cookie's attributes, rotation and reuse detection by
//! cookie, sign-out, the CSRF proof, and CORS for the configured origins.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{DEFAULT_PASSWORD, TestApp, TestResponse};
use tessera::users::models::Role;

const SIGN_IN: &str = "/api/v1/auth/session";
const REFRESH: &str = "/api/v1/auth/session/refresh";
const SIGN_OUT: &str = "/api/v1/auth/session/logout";
const CSRF: (&str, &str) = ("x-tessera-csrf", "1");
const EMAIL: &str = "ada@example.com";

/// Signs in as the browser would, CSRF header included.
async fn browser_sign_in(app: &TestApp) -> TestResponse {
    app.post(SIGN_IN)
        .header(CSRF.0, CSRF.1)
        .form(&[("username", EMAIL), ("password", DEFAULT_PASSWORD)])
        .send()
        .await
}

/// The response's `Set-Cookie` for the session cookie.
fn set_cookie(response: &TestResponse) -> &str {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("tessera_refresh="))
        .unwrap_or_else(|| panic!("no session cookie set: {:?}", response.headers))
}

/// The `name=value` pair a browser would send back.
fn cookie_pair(response: &TestResponse) -> String {
    set_cookie(response).split(';').next().unwrap().to_owned()
}

async fn refresh_with(app: &TestApp, cookie: &str) -> TestResponse {
    app.post(REFRESH)
        .header(CSRF.0, CSRF.1)
        .header("cookie", cookie)
        .send()
        .await
}

async fn me(app: &TestApp, access_token: &str) -> StatusCode {
    app.get("/api/v1/users/me")
        .bearer(access_token)
        .send()
        .await
        .status
}

fn access_token(response: &TestResponse) -> String {
    response.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_browser_sign_in_puts_the_refresh_token_in_an_httponly_cookie() {
    let app = TestApp::spawn().await;
    app.create_user(EMAIL, DEFAULT_PASSWORD, Role::User).await;
    let response = browser_sign_in(&app).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let body = response.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(
        body.get("refresh_token").is_none(),
        "the body holds no refresh token: {body}"
    );
    let cookie = set_cookie(&response);
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    for expected in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/v1/auth/session",
        "Max-Age=2592000",
    ] {
        assert!(attributes.contains(&expected), "{expected} in {cookie}");
    }
    assert!(cookie_pair(&response).len() > "tessera_refresh=".len() + 40);
    assert_eq!(me(&app, &access_token(&response)).await, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_password_sets_no_cookie() {
    let app = TestApp::spawn().await;
    app.create_user(EMAIL, DEFAULT_PASSWORD, Role::User).await;
    let response = app
        .post(SIGN_IN)
        .header(CSRF.0, CSRF.1)
        .form(&[("username", EMAIL), ("password", "not the password")])
        .send()
        .await;
    response.assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert!(response.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn refreshing_by_cookie_rotates_it_and_a_reused_cookie_ends_the_sign_in() {
    let app = TestApp::spawn().await;
    app.create_user(EMAIL, DEFAULT_PASSWORD, Role::User).await;
    let signed_in = browser_sign_in(&app).await;
    let first = cookie_pair(&signed_in);

    let refreshed = refresh_with(&app, &format!("theme=dark; {first}")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert!(refreshed.json().get("refresh_token").is_none());
    let second = cookie_pair(&refreshed);
    assert_ne!(first, second, "the cookie rotates");
    let access = access_token(&refreshed);
    assert_eq!(me(&app, &access).await, StatusCode::OK);

    // A thief replays the first cookie: the whole sign-in ends.
    let replayed = refresh_with(&app, &first).await;
    replayed.assert_problem(StatusCode::UNAUTHORIZED, "refresh_token_reused");
    assert!(
        set_cookie(&replayed).contains("Max-Age=0"),
        "a refused cookie is cleared"
    );
    refresh_with(&app, &second)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    assert_eq!(me(&app, &access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signing_out_clears_the_cookie_and_ends_the_sign_in() {
    let app = TestApp::spawn().await;
    app.create_user(EMAIL, DEFAULT_PASSWORD, Role::User).await;
    let signed_in = browser_sign_in(&app).await;
    let cookie = cookie_pair(&signed_in);
    let access = access_token(&signed_in);
    let signed_out = app
        .post(SIGN_OUT)
        .header(CSRF.0, CSRF.1)
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(signed_out.status, StatusCode::NO_CONTENT);
    let cleared = set_cookie(&signed_out);
    assert!(cleared.starts_with("tessera_refresh=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(cleared.contains("Path=/api/v1/auth/session"), "{cleared}");
    refresh_with(&app, &cookie)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    assert_eq!(me(&app, &access).await, StatusCode::UNAUTHORIZED);
    // Signing out without a session is harmless.
    let again = app.post(SIGN_OUT).header(CSRF.0, CSRF.1).send().await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_refresh_without_a_cookie_is_401() {
    let app = TestApp::spawn().await;
    let response = app.post(REFRESH).header(CSRF.0, CSRF.1).send().await;
    response.assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    refresh_with(&app, "tessera_refresh=made-up")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

#[tokio::test]
async fn requests_without_the_csrf_proof_or_from_another_site_are_refused() {
    let app = TestApp::spawn().await;
    app.create_user(EMAIL, DEFAULT_PASSWORD, Role::User).await;
    let form = [("username", EMAIL), ("password", DEFAULT_PASSWORD)];
    let forged_sign_in = app.post(SIGN_IN).form(&form).send().await;
    forged_sign_in.assert_problem(StatusCode::FORBIDDEN, "csrf_check_failed");
    assert!(forged_sign_in.headers.get("set-cookie").is_none());

    let cookie = cookie_pair(&browser_sign_in(&app).await);
    for (path, headers) in [
        (REFRESH, vec![]),
        (REFRESH, vec![("x-tessera-csrf", "yes")]),
        (REFRESH, vec![CSRF, ("sec-fetch-site", "cross-site")]),
        (SIGN_OUT, vec![]),
        (SIGN_OUT, vec![CSRF, ("sec-fetch-site", "cross-site")]),
    ] {
        let mut request = app.post(path).header("cookie", &cookie);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let response = request.send().await;
        response.assert_problem(StatusCode::FORBIDDEN, "csrf_check_failed");
        assert!(
            response.headers.get("set-cookie").is_none(),
            "{path} {headers:?}"
        );
    }
    // None of the forged requests spent or ended the session.
    let refreshed = refresh_with(&app, &cookie).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
}

#[tokio::test]
async fn the_cookie_drops_secure_only_for_localhost_in_development() {
    let app = TestApp::spawn_with(&[("APP_ENV", "development")]).await;
    app.create_user(EMAIL, DEFAULT_PASSWORD, Role::User).await;
    for (host, secure) in [
        ("localhost:8000", false),
        ("127.0.0.1:8000", false),
        ("api.example.com", true),
    ] {
        let response = app
            .post(SIGN_IN)
            .header(CSRF.0, CSRF.1)
            .header("host", host)
            .form(&[("username", EMAIL), ("password", DEFAULT_PASSWORD)])
            .send()
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        let attributes: Vec<&str> = set_cookie(&response).split("; ").collect();
        assert_eq!(
            attributes.contains(&"Secure"),
            secure,
            "{host}: {attributes:?}"
        );
    }
}

#[tokio::test]
async fn only_configured_origins_may_send_credentials_and_the_csrf_header() {
    let app = TestApp::spawn_with(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, REFRESH)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-tessera-csrf")
            .send()
    };
    let allowed = preflight("https://app.example.com").await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    let headers = allowed.header("access-control-allow-headers").unwrap();
    assert!(headers.contains("x-tessera-csrf"), "{headers}");
    let other = preflight("https://evil.example.net").await;
    assert!(
        other.header("access-control-allow-origin").is_none(),
        "{:?}",
        other.headers
    );
}
