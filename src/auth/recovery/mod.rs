//! Password recovery by email: `POST /auth/password-reset` mails a
//! single-use link to an account's address, and `POST
//! /auth/password-reset/confirm` sets the password the link's holder chose,
//! ending every session of the account. The link's token and its message
//! are written in one transaction (through the
//! [`crate::auth::outbox::Outbox`] port), so a message
//! goes out exactly when its token exists.

pub mod router;
pub mod schemas;
pub mod service;
