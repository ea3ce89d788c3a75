//! The email domain's side of `auth`'s outbox port: an account email becomes
//! a `send_email` execution written on the flow's own connection, so it is
//! delivered exactly when the flow's transaction commits.

use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::auth::outbox::{AccountEmail, Outbox, Outgoing};
use crate::email::config::EmailConfig;
use crate::email::kind::{EmailMessage, SendEmail, SendEmailInput};
use crate::executions::kinds::{ExecutionKind, KindRegistry};
use crate::executions::service;
use crate::shared::error::AppError;

/// The path of the frontend page a reset link opens (`?token=` follows).
pub const RESET_PASSWORD_PATH: &str = "/reset-password";

/// The path of the frontend page a verification link opens (`?token=` follows).
pub const VERIFY_EMAIL_PATH: &str = "/verify-email";

/// Queues account emails as `send_email` executions.
pub struct ExecutionOutbox {
    registry: Arc<KindRegistry>,
    config: Arc<EmailConfig>,
}

impl ExecutionOutbox {
    /// An outbox enqueueing on `registry`'s `send_email`, linking to the
    /// settings' `PUBLIC_URL`.
    pub fn new(registry: Arc<KindRegistry>, config: EmailConfig) -> Self {
        Self {
            registry,
            config: Arc::new(config),
        }
    }

    /// The message an account email is, its links under `PUBLIC_URL`.
    fn message(&self, email: AccountEmail) -> EmailMessage {
        match email {
            AccountEmail::PasswordReset { token, expires_in } => EmailMessage::PasswordReset {
                link: format!(
                    "{}{RESET_PASSWORD_PATH}?token={token}",
                    self.config.public_url
                ),
                expires_in_minutes: u32::try_from(expires_in.as_secs().div_ceil(60))
                    .unwrap_or(u32::MAX),
            },
            AccountEmail::PasswordChanged => EmailMessage::PasswordChanged,
            AccountEmail::VerifyAddress { token, expires_in } => EmailMessage::VerifyEmail {
                link: format!(
                    "{}{VERIFY_EMAIL_PATH}?token={token}",
                    self.config.public_url
                ),
                expires_in_hours: u32::try_from(expires_in.as_secs().div_ceil(3600))
                    .unwrap_or(u32::MAX),
            },
            AccountEmail::AddressChanged { new_address } => {
                EmailMessage::EmailChanged { new_address }
            }
        }
    }
}

impl Outbox for ExecutionOutbox {
    fn enqueue<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        outgoing: Outgoing,
    ) -> BoxFuture<'c, Result<(), AppError>> {
        async move {
            let input = SendEmailInput {
                to: outgoing.to,
                message: self.message(outgoing.email),
            };
            let value = serde_json::to_value(&input).map_err(AppError::internal)?;
            service::enqueue_internal(
                conn,
                &self.registry,
                outgoing.user_id,
                SendEmail::NAME,
                &value,
                self.config.max_attempts,
            )
            .await?;
            // Counted when written: a transaction that then rolls back counts too.
            metrics::counter!("emails_queued_total", "template" => input.message.template())
                .increment(1);
            Ok(())
        }
        .boxed()
    }
}
