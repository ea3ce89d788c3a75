//! Tessera: a domain-sliced modular monolith.
//!
//! - [`app`]: the composition root, the one module that sees every domain:
//!   `Settings` (every setting, by owner), `Application::build` (state,
//!   router, workers — what `serve`, `worker` and the tests run), the OpenAPI
//!   document and the seeders.
//! - [`cli`]: the `tessera` commands, one file per subcommand that needs more
//!   than a few lines.
//! - [`core`]: the platform — platform settings and the typed variable reader,
//!   database pool and migrations, HTTP middleware and extractors, health,
//!   docs, telemetry, metrics, shutdown. It knows no domain.
//! - [`shared`]: the small kernel every domain may use — the one error type and
//!   shape, field errors and validation, pagination, the diesel schema.
//! - [`users`]: profiles, roles and their administration (the bottom domain:
//!   it knows nothing of credentials).
//! - [`auth`]: credentials, tokens, access-control extractors and every account
//!   flow that needs a password (sign-up, self-deletion, the first admin).
//! - [`executions`]: durable background jobs in PostgreSQL — the API, the kind
//!   registry, the event stream and the queue engine that runs them.
//! - [`inference`]: text embeddings — the engine (a library that knows no HTTP
//!   or database), the batcher, the OpenAI-compatible API and the
//!   `embed_texts` execution kind.
//! - [`email`]: mail delivered as durable executions — the `send_email` kind,
//!   SMTP (or the log), the templates, and the outbox `auth`'s flows queue through.
//!
//! Domains depend downwards only: `users` ← `auth` ← `executions`, `inference`,
//! `email` (which implements `auth`'s outbox port).

pub mod app;
pub mod auth;
pub mod cli;
pub mod core;
pub mod email;
pub mod executions;
pub mod inference;
pub mod shared;
pub mod users;
