//! The email domain: delivering mail as durable executions. Account flows
//! (password reset, address verification) queue a message through
//! [`outbox::ExecutionOutbox`] inside their own transaction; the
//! `send_email` kind ([`kind::SendEmail`]) renders it from the templates
//! under `templates/email/` and hands it to SMTP (or, in development
//! without SMTP, to the log), retried with the queue's backoff.
//!
//! It sits above `auth` (whose outbox port it implements) and `executions`
//! (whose queue carries the messages).

pub mod config;
pub mod kind;
pub mod outbox;
pub mod templates;
pub mod transport;
