//! The auth domain: credentials (passwords, tokens, API keys, browser
//! sessions) and access control, and every account flow that needs a password
//! (sign-up, self-deletion, the first admin).

pub mod access_cache;
pub mod account_mail;
pub mod accounts;
pub mod api_keys;
pub mod browser_sessions;
pub mod config;
pub mod email_tokens;
pub mod extract;
pub mod limiter;
pub mod models;
pub mod outbox;
pub mod password;
pub mod recovery;
pub mod repository;
pub mod router;
pub mod schemas;
pub mod seed;
pub mod service;
pub mod sessions;
pub mod tokens;
pub mod verification;
