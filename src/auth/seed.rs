//! The first admin, so a new deployment can be administered at all.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::auth::accounts;
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
        let config = &self.auth.config;
        let development = context.config.is_development();
        let Some(email) = config
            .first_admin_email
            .clone()
            .or_else(|| development.then(|| DEVELOPMENT_ADMIN_EMAIL.to_owned()))
        else {
            return Ok(SeedOutcome::Unchanged);
        };
        let email = Email::parse(&email)
            .map_err(|invalid| AppError::internal(FirstAdminError::Email(invalid)))?;
        let mut conn = context.pool.get().await?;
        if service::find_by_email(&mut conn, &email.clone().into_inner())
            .await?
            .is_some()
        {
            return Ok(SeedOutcome::Unchanged);
        }
        drop(conn);
        let (password, generated) = match &config.first_admin_password {
            Some(password) => (password.expose().to_owned(), false),
            None if development => (generate_password()?, true),
            None => {
                return Err(AppError::internal(FirstAdminError::PasswordMissing));
            }
        };
        let account = NewProfile {
            email,
            full_name: FullName::parse("Administrator").map_err(AppError::internal)?,
            role: Role::Admin,
        };
        let admin = accounts::insert_account(&context.pool, &self.auth, account, &password).await?;
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
