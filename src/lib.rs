//! Tessera: a domain-sliced modular monolith.
//!
//! `core` is the platform (configuration, database, HTTP middleware, telemetry) and
//! knows no domain; `shared` is the small kernel every domain may use (errors);
//! `app` is the composition root, the one module that sees every domain.

pub mod app;
pub mod cli;
pub mod core;
pub mod shared;
