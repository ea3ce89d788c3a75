//! Address verification: sign-up and an email change mail a single-use link
//! to the address to prove; `POST /auth/verify-email` uses it (marking the
//! address verified, or making a pending address the account's email and
//! telling the old one), and `POST /users/me/email-verification` sends it
//! again. With `REQUIRE_VERIFIED_EMAIL`, sign-in waits for it.

pub mod router;
pub mod schemas;
pub mod service;
