//! The executions domain: durable background jobs in PostgreSQL — submit,
//! track, cancel, retry, stream progress — and the workers that run them.

pub mod config;
pub mod context;
pub mod kinds;
pub mod listener;
pub mod models;
pub mod repository;
pub mod router;
pub mod schemas;
pub mod service;
pub mod worker;
