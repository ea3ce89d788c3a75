//! `x-request-id`: taken from the client when it is sensible, generated otherwise,
//! echoed on the response and recorded on the request's log span.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header carrying the request id.
pub const HEADER: &str = "x-request-id";

/// Longest client-supplied id we keep; longer ones are replaced.
const MAX_CLIENT_ID_LEN: usize = 128;

/// The id of the current request, available as a request and response extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Middleware: settles the request id before anything else runs.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_acceptable(value))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(HEADER, value.clone());
        request.extensions_mut().insert(RequestId(id.clone()));
        let mut response = next.run(request).await;
        response.headers_mut().insert(HEADER, value);
        response.extensions_mut().insert(RequestId(id));
        return response;
    }
    next.run(request).await
}

/// Client ids are kept when short and made of URL-safe characters, so they
/// cannot forge log lines or bloat them.
fn is_acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::is_acceptable;

    #[test]
    fn only_tidy_client_ids_are_kept() {
        assert!(is_acceptable("abc-123_x.y:z"));
        assert!(!is_acceptable(""));
        assert!(!is_acceptable("has space"));
        assert!(!is_acceptable(&"a".repeat(129)));
    }
}
