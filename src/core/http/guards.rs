//! Guards that keep the service answering under pressure: a bound on requests
//! in flight (over it: 503 at once, not an ever-growing queue) and a bound on
//! how long any one request may take.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::shared::error::AppError;

/// Admits at most a fixed number of requests at once.
#[derive(Debug)]
pub struct LoadShedder {
    permits: Semaphore,
}

impl LoadShedder {
    /// A shedder admitting `max_in_flight` requests at once.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            permits: Semaphore::new(max_in_flight),
        }
    }
}

/// Middleware: answers 503 `overloaded` when the service is at capacity.
pub async fn shed_load(shedder: Arc<LoadShedder>, request: Request, next: Next) -> Response {
    match shedder.permits.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => AppError::Unavailable {
            code: "overloaded",
            detail: "The service is at capacity; try again shortly.".to_owned(),
            retry_after: Some(Duration::from_secs(1)),
        }
        .into_response(),
    }
}

/// Middleware: answers 503 `request_timeout` when a request takes too long.
pub async fn enforce_timeout(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = AppError::Unavailable {
                code: "request_timeout",
                detail: format!(
                    "The request took longer than {} ms and was abandoned.",
                    limit.as_millis()
                ),
                retry_after: None,
            }
            .into_response();
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}
