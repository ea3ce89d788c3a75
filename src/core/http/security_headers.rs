//! Standard security headers on every response.
//!
//! The content security policy allows scripts, styles and fonts from this
//! origin only, so the documentation pages provably load nothing from another
//! host (Swagger UI and ReDoc both need inline styles and ReDoc a worker).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::core::config::AppEnv;

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; \
     form-action 'self'";

/// Middleware: adds the security headers a response does not set itself.
pub async fn add(env: AppEnv, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if env == AppEnv::Production {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
    response
}
