//! The executions domain: durable background jobs in PostgreSQL — submit,
//! track, cancel, retry, stream progress — and the workers that run them.

pub mod config;
pub mod context;
pub mod document;
pub mod events;
pub mod kinds;
pub mod models;
pub mod queue;
pub mod repository;
pub mod router;
pub mod schemas;
pub mod service;
