//! The emails account flows send, and the port they queue them through.
//!
//! `auth` sits below the executions engine, so it cannot enqueue a
//! `send_email` execution itself: the composition root hands it an
//! [`Outbox`] (the email domain's), which writes the message on the
//! connection it is given — inside the flow's own transaction, so a message
//! exists exactly when the token it carries does.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::shared::error::AppError;

/// A message about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEmail {
    /// A single-use link that sets a new password, valid for `expires_in`.
    PasswordReset {
        /// The token the link carries.
        token: String,
        /// How long the link works.
        expires_in: Duration,
    },
    /// A notice that the password was changed through a reset link.
    PasswordChanged,
    /// A single-use link that proves the address it is mailed to, valid for `expires_in`.
    VerifyAddress {
        /// The token the link carries.
        token: String,
        /// How long the link works.
        expires_in: Duration,
    },
    /// A notice to the old address that the account's email is now `new_address`.
    AddressChanged {
        /// The account's new address.
        new_address: String,
    },
}

/// A message to queue: to whom, about which account.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The account the message is about (it owns the delivery).
    pub user_id: Uuid,
    /// The address it goes to.
    pub to: String,
    /// What it says.
    pub email: AccountEmail,
}

/// Queues messages on a connection, inside the caller's transaction.
pub trait Outbox: Send + Sync {
    /// Queues `message` on `conn`; it is sent only if the transaction commits.
    fn enqueue<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        message: Outgoing,
    ) -> BoxFuture<'c, Result<(), AppError>>;
}

/// The outbox the account flows share.
pub type SharedOutbox = Arc<dyn Outbox>;
