//! Extractors that tell a handler who is calling.
//!
//! `CurrentUser` requires a signed-in person (an access token); `AdminUser`
//! also requires the admin role; `OptionalUser` accepts anonymous callers but
//! still refuses a bad token. None of them accepts an API key: those reach
//! only the routes that take a [`ScopedUser`], a signed-in person or a key
//! holding the route's scope. `ClientAddress` names the caller's network
//! address for rate limits.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use crate::auth::api_keys::models::Scope;
use crate::auth::service::{self, AuthState, Authenticated, Credential};
use crate::core::platform::Platform;
use crate::shared::error::AppError;
use crate::users::models::{Role, User};

/// The authenticated caller, signed in with a password.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

/// The authenticated caller, who is an admin.
#[derive(Debug, Clone)]
pub struct AdminUser(pub User);

/// The caller if a bearer token was sent; anonymous otherwise.
#[derive(Debug, Clone)]
pub struct OptionalUser(pub Option<User>);

/// The caller of a route that programs may call too: a signed-in person, or
/// an API key holding scope `S` (acting as its owner, the user here).
#[derive(Debug, Clone)]
pub struct ScopedUser<S>(pub User, pub PhantomData<S>);

/// The scope an API key needs to reach a route, named by a marker type so
/// that a handler's signature says it: `ScopedUser<InferenceScope>`.
pub trait RequiredScope {
    /// The scope.
    const SCOPE: Scope;
}

/// Marks the inference routes.
#[derive(Debug, Clone)]
pub struct InferenceScope;

impl RequiredScope for InferenceScope {
    const SCOPE: Scope = Scope::Inference;
}

/// Marks the routes that read executions.
#[derive(Debug, Clone)]
pub struct ExecutionsReadScope;

impl RequiredScope for ExecutionsReadScope {
    const SCOPE: Scope = Scope::ExecutionsRead;
}

/// Marks the routes that submit or change executions.
#[derive(Debug, Clone)]
pub struct ExecutionsWriteScope;

impl RequiredScope for ExecutionsWriteScope {
    const SCOPE: Scope = Scope::ExecutionsWrite;
}

/// The client as the limiter keys it: the address `TRUSTED_PROXY_HOPS` proxies
/// vouch for (else the connected peer), IPv6 grouped by /64.
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
            detail: "The Authorization header must be `Bearer <access token or API key>`."
                .to_owned(),
        })?;
    Ok(Some(token))
}

/// Who the request's bearer credential speaks for; `None` without one.
async fn authenticated<S>(parts: &Parts, state: &S) -> Result<Option<Authenticated>, AppError>
where
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
{
    let Some(credential) = bearer_token(parts)? else {
        return Ok(None);
    };
    let authenticated = service::authenticate(
        &Platform::from_ref(state),
        &AuthState::from_ref(state),
        credential,
    )
    .await?;
    // The request's log lines name who made it, and with which key.
    let span = tracing::Span::current();
    span.record("user_id", tracing::field::display(authenticated.user.id));
    if let Credential::ApiKey(grant) = &authenticated.credential {
        span.record("api_key_id", tracing::field::display(grant.key_id));
    }
    Ok(Some(authenticated))
}

fn not_authenticated() -> AppError {
    AppError::Unauthorized {
        code: "not_authenticated",
        detail: "Sign in and send `Authorization: Bearer <access token>`.".to_owned(),
    }
}

impl<S> FromRequestParts<S> for OptionalUser
where
    S: Send + Sync,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match authenticated(parts, state).await? {
            None => Ok(Self(None)),
            Some(Authenticated {
                user,
                credential: Credential::Session(session),
            }) => {
                // Kept for `CurrentSession`, so a handler that needs the sign-in
                // does not decode the token twice.
                parts.extensions.insert(SessionOf(session));
                Ok(Self(Some(user)))
            }
            Some(Authenticated {
                credential: Credential::ApiKey(_),
                ..
            }) => Err(AppError::Forbidden {
                code: "api_key_not_allowed",
                detail: "API keys cannot manage accounts or credentials; sign in with a password \
                         for this."
                    .to_owned(),
            }),
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
        user.map(Self).ok_or_else(not_authenticated)
    }
}

impl<S, Needed> FromRequestParts<S> for ScopedUser<Needed>
where
    S: Send + Sync,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
    Needed: RequiredScope,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authenticated = authenticated(parts, state)
            .await?
            .ok_or_else(not_authenticated)?;
        match authenticated.credential {
            Credential::ApiKey(grant) if !grant.scopes.contains(&Needed::SCOPE) => {
                Err(AppError::Forbidden {
                    code: "insufficient_scope",
                    detail: format!(
                        "This API key lacks the `{}` scope this needs.",
                        Needed::SCOPE.as_str()
                    ),
                })
            }
            _ => Ok(Self(authenticated.user, PhantomData)),
        }
    }
}

/// The signed-in caller and the sign-in their token belongs to (to end every
/// other sign-in after a sensitive change).
pub struct CurrentSession {
    /// The caller.
    pub user: User,
    /// Their sign-in; `None` for a token issued before sessions were tracked.
    pub session: Option<uuid::Uuid>,
}

/// The sign-in of the request's token, left by the authenticating extractor.
#[derive(Clone, Copy)]
struct SessionOf(Option<uuid::Uuid>);

impl<S> FromRequestParts<S> for CurrentSession
where
    S: Send + Sync,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        let session = parts
            .extensions
            .get::<SessionOf>()
            .and_then(|SessionOf(session)| *session);
        Ok(Self { user, session })
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
        let hops = AuthState::from_ref(state).config.trusted_proxy_hops;
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let connected = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        Ok(Self(client_key(client_ip(&forwarded, hops, connected))))
    }
}

/// The client's address: with `hops` trusted proxies in front, the entry that
/// many places from the right of `X-Forwarded-For` (the rightmost is added by
/// the nearest proxy; entries further left are whatever the client sent, so
/// rotating them changes nothing). Without trusted proxies, or when the header
/// is short or unparsable, the connected peer.
fn client_ip(forwarded: &str, hops: usize, connected: Option<IpAddr>) -> Option<IpAddr> {
    if hops == 0 {
        return connected;
    }
    let entries: Vec<&str> = forwarded
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    entries
        .len()
        .checked_sub(hops)
        .and_then(|index| entries.get(index))
        .and_then(|entry| entry.parse::<IpAddr>().ok())
        .or(connected)
}

/// The limiter's key for a client: an IPv4 address as is, an IPv6 address by
/// its /64 (one subscriber's network: rotating within it is free).
fn client_key(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(network))
        }
        None => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("test addresses parse"))
    }

    #[test]
    fn the_client_is_the_entry_added_by_the_farthest_trusted_proxy() {
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_ip("6.6.6.6, 198.51.100.7", 1, peer),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip("6.6.6.6, 198.51.100.7, 10.0.0.9", 2, peer),
            ip("198.51.100.7")
        );
        // Without trust the header is ignored; a short or bad one falls back to the peer.
        assert_eq!(client_ip("6.6.6.6", 0, peer), peer);
        assert_eq!(client_ip("", 1, peer), peer);
        assert_eq!(client_ip("not-an-ip", 1, peer), peer);
        assert_eq!(client_ip("198.51.100.7", 2, peer), peer);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64() {
        let a = client_key(ip("2001:db8:1:2:aaaa::1"));
        let b = client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, client_key(ip("2001:db8:1:3::1")));
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(client_key(None), "unknown");
    }
}
