//! The users domain: accounts, profiles, roles and their administration.

pub mod models;
pub mod repository;
pub mod router;
pub mod schemas;
pub mod service;
