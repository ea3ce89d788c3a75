//! The shared kernel: the few types every domain and the platform agree on.

pub mod error;
