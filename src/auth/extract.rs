//! Extractors that tell a handler who is calling.
//!
//! `CurrentUser` requires a valid bearer token; `AdminUser` also requires the
//! admin role; `OptionalUser` accepts anonymous callers but still refuses a
//! bad token. `ClientAddress` names the caller's network address for rate limits.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use crate::auth::service::{self, AuthState};
use crate::core::platform::Platform;
use crate::shared::error::AppError;
use crate::users::models::{Role, User};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

/// The authenticated caller, who is an admin.
#[derive(Debug, Clone)]
pub struct AdminUser(pub User);

/// The caller if a bearer token was sent; anonymous otherwise.
#[derive(Debug, Clone)]
pub struct OptionalUser(pub Option<User>);

/// The client's network address (from `X-Forwarded-For` only when configured to trust it).
#[derive(Debug, Clone)]
pub struct ClientAddress(pub String);

/// The bearer token of the request, if it has one.
fn bearer_token(parts: &Parts) -> Result<Option<&str>, AppError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| AppError::Unauthorized {
            code: "invalid_token",
            detail: "The Authorization header must be `Bearer <access token>`.".to_owned(),
        })?;
    Ok(Some(token))
}

impl<S> FromRequestParts<S> for OptionalUser
where
    S: Send + Sync,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match bearer_token(parts)? {
            None => Ok(Self(None)),
            Some(token) => {
                let user = service::authenticate(
                    &Platform::from_ref(state),
                    &AuthState::from_ref(state),
                    token,
                )
                .await?;
                Ok(Self(Some(user)))
            }
        }
    }
}

impl<S> FromRequestParts<S> for CurrentUser
where
    S: Send + Sync,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let OptionalUser(user) = OptionalUser::from_request_parts(parts, state).await?;
        user.map(Self).ok_or_else(|| AppError::Unauthorized {
            code: "not_authenticated",
            detail: "Sign in and send `Authorization: Bearer <access token>`.".to_owned(),
        })
    }
}

impl<S> FromRequestParts<S> for AdminUser
where
    S: Send + Sync,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        if user.role == Role::Admin {
            Ok(Self(user))
        } else {
            Err(AppError::Forbidden {
                code: "admin_required",
                detail: "Only admins may do this.".to_owned(),
            })
        }
    }
}

impl<S> FromRequestParts<S> for ClientAddress
where
    S: Send + Sync,
    AuthState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthState::from_ref(state);
        let forwarded = auth
            .config
            .trust_forwarded_for
            .then(|| parts.headers.get("x-forwarded-for"))
            .flatten()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .map(|address| address.trim().to_owned())
            .filter(|address| !address.is_empty());
        let connected = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip().to_string());
        Ok(Self(
            forwarded
                .or(connected)
                .unwrap_or_else(|| "unknown".to_owned()),
        ))
    }
}
