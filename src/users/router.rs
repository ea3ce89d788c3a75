//! `/api/v1/users`: sign-up, one's own profile, and account administration.

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::account_mail::AccountMail;
use crate::auth::accounts;
use crate::auth::accounts::Caller;
use crate::auth::extract::{AdminUser, ClientAddress, CurrentSession, CurrentUser, OptionalUser};
use crate::auth::service::AuthState;
use crate::core::http::conditional::{self, Versioned};
use crate::core::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::core::platform::Platform;
use crate::shared::error::{AppError, Problem};
use crate::shared::pagination::Page;
use crate::users::models::User;
use crate::users::schemas::{
    CreateUserRequest, DeleteMeRequest, UpdateMeBody, UpdateMeRequest, UpdateUserRequest,
    UserListQuery, UserResponse,
};
use crate::users::service::{self, RequestedChanges};

/// The OpenAPI tag of these routes.
pub const TAG: &str = "users";

/// Where created accounts live, for `Location`.
const COLLECTION_PATH: &str = "/api/v1/users";

/// The users routes, for any state holding the platform and the auth state.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
    AccountMail: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_me, update_me, delete_me))
        .routes(routes!(get_user, update_user, delete_user))
}

/// An account with its `ETag`, as every route here answers one.
fn versioned(status: StatusCode, user: User) -> Versioned<UserResponse> {
    Versioned::new(status, user.id, user.revision, UserResponse::from(user))
}

/// Sign up, or create any account as an admin.
///
/// Anyone may sign up as a user; an admin may also choose the role and the active flag.
#[utoipa::path(post, path = "/users", tag = TAG, operation_id = "users-create",
    request_body = CreateUserRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Created; `Location` names the account.", body = UserResponse,
            headers(("Location" = String), ("ETag" = String))),
        (status = 403, description = "Sign-up is disabled, or only admins may set the role.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The email is taken.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many sign-ups from this client (`SIGNUPS_PER_CLIENT`; admins are not counted); see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_user(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    State(mail): State<AccountMail>,
    OptionalUser(actor): OptionalUser,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<CreateUserRequest>,
) -> Result<Versioned<UserResponse>, AppError> {
    let user = accounts::sign_up(&platform, &auth, &mail, actor.as_ref(), request, &client).await?;
    let location = format!("{COLLECTION_PATH}/{}", user.id);
    Ok(versioned(StatusCode::CREATED, user).at(location))
}

/// List every account, newest first.
///
/// Admins only; cursor-paginated.
#[utoipa::path(get, path = "/users", tag = TAG, operation_id = "users-list",
    params(UserListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of accounts.", body = Page<UserResponse>),
        (status = 401, description = "No valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filters.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_users(
    State(platform): State<Platform>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<UserListQuery>,
) -> Result<axum::Json<Page<UserResponse>>, AppError> {
    Ok(axum::Json(service::list(&platform, query).await?))
}

/// Read the caller's own account.
#[utoipa::path(get, path = "/users/me", tag = TAG, operation_id = "users-get-me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account.", body = UserResponse, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag."),
        (status = 401, description = "No valid token.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_me(CurrentUser(user): CurrentUser, headers: HeaderMap) -> Response {
    versioned(StatusCode::OK, user).unless_current(&headers)
}

/// Change one's own email or name.
///
/// A new email takes effect when the link mailed to it is used; until then
/// it is `pending_email` (sending the current email cancels it).
#[utoipa::path(patch, path = "/users/me", tag = TAG, operation_id = "users-update-me",
    request_body = UpdateMeBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated account.", body = UserResponse, headers(("ETag" = String))),
        (status = 403, description = "`current_password` is wrong (an email change needs it).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed password checks, or verification links asked for; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The email is taken.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since the `If-Match` ETag.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_me(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    State(mail): State<AccountMail>,
    CurrentSession { user, session }: CurrentSession,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateMeRequest>,
) -> Result<Versioned<UserResponse>, AppError> {
    let revision = conditional::required_revision(&headers, user.id)?;
    let changes = RequestedChanges {
        email: request.email,
        full_name: request.full_name,
        role: None,
        is_active: None,
    };
    let caller = Caller {
        user: &user,
        session,
        client: &client,
    };
    let password = request.current_password.as_deref();
    let updated = accounts::update_own_profile(
        &platform, &auth, &mail, &caller, revision, changes, password,
    )
    .await?;
    Ok(versioned(StatusCode::OK, updated))
}

/// Delete one's own account.
///
/// Needs the current password; every session of the account ends.
#[utoipa::path(delete, path = "/users/me", tag = TAG, operation_id = "users-delete-me",
    request_body = DeleteMeRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, description = "Wrong password.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed password checks; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last active admin cannot be deleted.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since the `If-Match` ETag.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_me(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    CurrentUser(user): CurrentUser,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    ApiJson(request): ApiJson<DeleteMeRequest>,
) -> Result<StatusCode, AppError> {
    let revision = conditional::required_revision(&headers, user.id)?;
    accounts::delete_own(
        &platform,
        &auth,
        &user,
        &request.password,
        revision,
        &client,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Read any account.
///
/// Admins only.
#[utoipa::path(get, path = "/users/{id}", tag = TAG, operation_id = "users-get",
    params(("id" = uuid::Uuid, Path, description = "The account's id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account.", body = UserResponse, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag."),
        (status = 403, description = "Not an admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_user(
    State(platform): State<Platform>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let user = service::get(&platform, id).await?;
    Ok(versioned(StatusCode::OK, user).unless_current(&headers))
}

/// Change any account, role and active flag included.
///
/// Admins only.
#[utoipa::path(patch, path = "/users/{id}", tag = TAG, operation_id = "users-update",
    params(("id" = uuid::Uuid, Path, description = "The account's id.")),
    request_body = UpdateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated account.", body = UserResponse, headers(("ETag" = String))),
        (status = 404, description = "No such account.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email taken, or the last active admin would be lost.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since the `If-Match` ETag.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_user(
    State(platform): State<Platform>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateUserRequest>,
) -> Result<Versioned<UserResponse>, AppError> {
    let revision = conditional::required_revision(&headers, id)?;
    let changes = RequestedChanges {
        email: request.email,
        full_name: request.full_name,
        role: request.role,
        is_active: request.is_active,
    };
    let updated = service::update(&platform, id, revision, changes).await?;
    Ok(versioned(StatusCode::OK, updated))
}

/// Delete any account.
///
/// Admins only.
#[utoipa::path(delete, path = "/users/{id}", tag = TAG, operation_id = "users-delete",
    params(("id" = uuid::Uuid, Path, description = "The account's id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such account.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last active admin cannot be deleted.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since the `If-Match` ETag.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_user(
    State(platform): State<Platform>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let revision = conditional::required_revision(&headers, id)?;
    service::delete(&platform, id, revision).await?;
    Ok(StatusCode::NO_CONTENT)
}
