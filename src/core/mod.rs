//! The platform: configuration, database, HTTP middleware, telemetry, metrics,
//! local PostgreSQL, seeding and shutdown. It knows no business domain.

pub mod config;
pub mod db;
pub mod docs;
pub mod health;
pub mod http;
pub mod local_postgres;
pub mod metrics;
pub mod platform;
pub mod seed;
pub mod server;
pub mod telemetry;
