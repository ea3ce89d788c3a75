//! The auth domain: credentials, tokens and access control.

pub mod extract;
pub mod models;
pub mod password;
pub mod repository;
pub mod router;
pub mod schemas;
pub mod service;
pub mod tokens;
