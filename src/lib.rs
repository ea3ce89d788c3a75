//! Tessera: a domain-sliced modular monolith.
//!
//! `core` is the platform (configuration, database, HTTP middleware, telemetry) and
//! knows no domain; `shared` is the small kernel every domain may use (errors);
//! `app` is the composition root, the one module that sees every domain;
//! `users` and `auth` are the first business domains; `inference` holds the
//! text-embedding engine.

pub mod app;
pub mod auth;
pub mod cli;
pub mod core;
pub mod executions;
pub mod inference;
pub mod shared;
pub mod users;
