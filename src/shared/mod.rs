//! The shared kernel: the few types every domain and the platform agree on.

pub mod error;
pub mod outage;
pub mod pagination;
pub mod schema;
pub mod text_enum;
pub mod validation;
