//! Guards that keep the service answering under pressure: a bound on requests
//! in flight (over it: 503 at once, not an ever-growing queue) and a bound on
//! how long any one request may take.
//!
//! A request holds its in-flight permit until its handler returns. A handler
//! whose response outlives it (an event stream) takes the permit with
//! [`HeldPermit`] and keeps it in the response body, so a long-lived stream
//! counts against the bound for as long as it is open.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::shared::error::AppError;

/// Admits at most a fixed number of requests at once.
#[derive(Debug)]
pub struct LoadShedder {
    permits: Arc<Semaphore>,
}

impl LoadShedder {
    /// A shedder admitting `max_in_flight` requests at once.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

/// The request's permit, left in its extensions for a handler that needs to
/// keep it past its return; the middleware's own hold ends with the handler.
#[derive(Clone)]
struct PermitSlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

/// The request's in-flight permit, taken over by a handler whose response
/// body lives on after it returns (an event stream): the permit is released
/// when the value is dropped, so keep it in the body. `None` when the route
/// runs without the load shedder (a router under test without middleware).
#[derive(Debug)]
pub struct HeldPermit(
    /// The permit, when the shedder admitted this request.
    pub Option<OwnedSemaphorePermit>,
);

impl<S: Send + Sync> FromRequestParts<S> for HeldPermit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let permit = parts
            .extensions
            .get::<PermitSlot>()
            .and_then(|slot| slot.0.lock().unwrap_or_else(PoisonError::into_inner).take());
        Ok(Self(permit))
    }
}

/// Middleware: answers 503 `overloaded` when the service is at capacity.
pub async fn shed_load(shedder: Arc<LoadShedder>, mut request: Request, next: Next) -> Response {
    match shedder.permits.clone().try_acquire_owned() {
        Ok(permit) => {
            // Held here until the handler has answered (the request's own copy
            // may go sooner), unless the handler took the permit for its body.
            let slot = PermitSlot(Arc::new(Mutex::new(Some(permit))));
            request.extensions_mut().insert(slot.clone());
            let response = next.run(request).await;
            drop(slot);
            response
        }
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
