//! The first admin, so a new deployment can be administered at all.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::auth::accounts;
use crate::auth::password::validate_password;
use crate::auth::service::AuthState;
use crate::core::seed::{SeedContext, SeedOutcome, Seeder};
use crate::shared::error::AppError;
use crate::shared::validation::Invalid;
use crate::users::models::{Email, FullName, Role};
use crate::users::service::{self, NewProfile};

/// The email of the development admin when `FIRST_ADMIN_EMAIL` is unset.
pub const DEVELOPMENT_ADMIN_EMAIL: &str = "admin@example.com";

/// Creates the admin named by `FIRST_ADMIN_EMAIL` / `FIRST_ADMIN_PASSWORD`
/// unless that account exists. In development both may be unset: the email
/// defaults to `admin@example.com` and a password is generated and printed once.
pub struct FirstAdminSeeder {
    auth: AuthState,
}

impl FirstAdminSeeder {
    /// A seeder hashing with `auth`'s password hasher.
    pub fn new(auth: AuthState) -> Self {
        Self { auth }
    }

    async fn seed(&self, context: &SeedContext) -> Result<SeedOutcome, AppError> {
        let development = context.config.is_development();
        let Some(email) = self.admin_email(development)? else {
            return Ok(SeedOutcome::Unchanged);
        };
        let mut conn = context.pool.get().await?;
        match service::find_by_email(&mut conn, &email.clone().into_inner()).await? {
            Some(existing) if existing.role == Role::Admin => return Ok(SeedOutcome::Unchanged),
            // Promoting someone else's account to admin would hand it over.
            Some(existing) => {
                return Err(AppError::internal(FirstAdminError::NotAnAdmin(
                    existing.email,
                )));
            }
            None => {}
        }
        drop(conn);
        let (password, generated) = self.admin_password(development)?;
        let account = NewProfile {
            email,
            full_name: FullName::parse("Administrator").map_err(AppError::internal)?,
            role: Role::Admin,
        };
        let admin = accounts::insert_account(&context.pool, &self.auth, account, &password).await?;
        // The operator chose this address; with REQUIRE_VERIFIED_EMAIL the
        // first admin must still be able to sign in.
        let mut conn = context.pool.get().await?;
        service::mark_email_verified(&mut conn, admin.id, chrono::Utc::now()).await?;
        if generated {
            // Shown once, on the terminal only (never in the logs); not stored anywhere.
            println!(
                "Created the development admin {} with password {password} (shown once; set FIRST_ADMIN_PASSWORD to choose it).",
                admin.email
            );
        }
        Ok(SeedOutcome::Applied(format!(
            "created admin {}",
            admin.email
        )))
    }

    /// `FIRST_ADMIN_EMAIL`, or in development the default; `None`: seed nothing.
    fn admin_email(&self, development: bool) -> Result<Option<Email>, AppError> {
        let configured = self.auth.config.first_admin_email.clone();
        let Some(email) =
            configured.or_else(|| development.then(|| DEVELOPMENT_ADMIN_EMAIL.to_owned()))
        else {
            return Ok(None);
        };
        Email::parse(&email)
            .map(Some)
            .map_err(|invalid| AppError::internal(FirstAdminError::Email(invalid)))
    }

    /// `FIRST_ADMIN_PASSWORD` (held to the sign-up rules), or in development a
    /// generated one; the flag says whether it was generated.
    fn admin_password(&self, development: bool) -> Result<(String, bool), AppError> {
        match &self.auth.config.first_admin_password {
            Some(password) => {
                validate_password(password.expose())
                    .map_err(|invalid| AppError::internal(FirstAdminError::Password(invalid)))?;
                Ok((password.expose().to_owned(), false))
            }
            None if development => Ok((generate_password()?, true)),
            None => Err(AppError::internal(FirstAdminError::PasswordMissing)),
        }
    }
}

impl Seeder for FirstAdminSeeder {
    fn name(&self) -> &'static str {
        "first_admin"
    }

    fn run<'a>(&'a self, context: &'a SeedContext) -> BoxFuture<'a, Result<SeedOutcome, AppError>> {
        self.seed(context).boxed()
    }
}

/// Why the first admin cannot be created from the configuration.
#[derive(Debug, thiserror::Error)]
enum FirstAdminError {
    /// `FIRST_ADMIN_EMAIL` is not an address.
    #[error("FIRST_ADMIN_EMAIL {0}")]
    Email(Invalid),
    /// `FIRST_ADMIN_PASSWORD` breaks the rules every other password follows.
    #[error("FIRST_ADMIN_PASSWORD {0}")]
    Password(Invalid),
    /// The address belongs to an account that is not an admin.
    #[error(
        "FIRST_ADMIN_EMAIL {0} belongs to an existing account that is not an admin; promote it by hand or choose another address"
    )]
    NotAnAdmin(String),
    /// Outside development nobody would ever learn a generated password.
    #[error("FIRST_ADMIN_PASSWORD is required to create the first admin outside development")]
    PasswordMissing,
}

/// A random 24-character password.
fn generate_password() -> Result<String, AppError> {
    use base64::Engine;
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(AppError::internal)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
